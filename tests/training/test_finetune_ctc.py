"""`d2v finetune --task ctc`: a tiny recognizer overfits real espeak-ng clips to WER 0 (the loss, the
vocabulary and the decoder line up); the frozen extractor and the frozen first updates; a run killed
with SIGKILL and resumed equals the uninterrupted run bit for bit; bad manifests and settings are one
line, exit 2."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from processes import kill_when
from realdata import pad_waveforms, speak, tiny_config
from safetensors.torch import load_file
from test_data_transcripts import write_manifest

from d2v.cli import main
from d2v.ctc import CTCVocabulary, greedy_decode
from d2v.model import build_encoder, preset
from d2v.model.checkpoint import CheckpointConfig, load_checkpoint, save_checkpoint
from d2v.preprocessing import TRIM_SILENCE, trim_silence
from d2v.training.ctc_masking import CTCMasking
from d2v.training.data import load_audio
from d2v.training.finetune_ctc import CTCEmissions, ctc_head, ctc_loss
from d2v.training.metrics import read_metrics

TEXTS = ["stop", "go back", "three one", "turn left"]


def tiny_json(tmp_path) -> str:
    """The tests' tiny audio encoder (dim 32, 2 blocks) as a JSON file."""
    path = tmp_path / "audio-encoder.json"
    path.write_text(json.dumps(tiny_config("audio").encoder.to_dict()))
    return str(path)


def no_dropout_json(tmp_path) -> str:
    """The tiny preset's audio encoder (dim 64, 4 blocks) without dropout, to overfit quickly."""
    cfg = preset("audio", "tiny").encoder
    cfg.dropout = cfg.attention_dropout = cfg.post_mlp_dropout = cfg.prenet_dropout = 0.0
    path = tmp_path / "overfit-encoder.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return str(path)


@pytest.fixture(scope="module")
def handful(tmp_path_factory):
    """Four real espeak-ng utterances (one voice) in a manifest with their transcripts."""
    root = tmp_path_factory.mktemp("handful")
    rows = []
    for i, text in enumerate(TEXTS):
        sf.write(root / f"{i}.flac", speak(text, "en-us", speed=150), 16000)
        rows.append({"path": f"{i}.flac", "text": text})
    write_manifest(root / "train.jsonl", rows)
    return root


def test_overfits_a_handful_of_clips_to_wer_zero(tmp_path, handful, capsys):
    out = tmp_path / "run"
    rc = main(["finetune", "--task", "ctc", "--modality", "audio", "--model-config", no_dropout_json(tmp_path),
               "--data", str(handful / "train.jsonl"), "--val-split", "train", "--test-split", "train",
               "--out", str(out), "--steps", "80", "--batch-size", "4", "--lr", "3e-3", "--val-every", "20",
               "--mask-prob", "0", "--mask-channel-prob", "0", "--layerdrop", "0", "--activation-dropout", "0",
               "--trim-silence", "true", "--progress", "false", "--save-dtype", "float16"])
    assert rc == 0
    assert "test WER 0.00%, CER 0.00% (4 clips, 4 exact" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["test_wer"] == results["val_wer"] == 0.0 and results["test_count"] == 4
    # the shipped checkpoint decodes the clips by itself: its head holds the vocabulary
    model, ckpt = load_checkpoint(out / "best")
    assert ckpt.head.to_dict() == {"type": "ctc", "labels": ["<blank>", "|", "A", "B", "C", "E", "F", "G", "H", "K",
                                                             "L", "N", "O", "P", "R", "S", "T", "U"],
                                   "pooling": "mean", "dropout": 0.0, "blank_id": 0, "word_delimiter": "|",
                                   "ignore_ids": []}
    assert ckpt.provenance["metrics"]["test_wer"] == 0.0 and ckpt.provenance["task"] == "ctc"
    assert ckpt.preprocessing["trim_silence"] == TRIM_SILENCE
    wavs = [torch.from_numpy(trim_silence(load_audio(str(handful / f"{i}.flac"), 16000), 16000, **TRIM_SILENCE))
            for i in range(4)]  # as the server will feed it: the checkpoint says trim_silence
    x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    pad = torch.arange(x.shape[1])[None] >= torch.tensor([len(w) for w in wavs])[:, None]
    with torch.no_grad():
        tokens, frame_pad = model.forward_features(x, pad)
        emissions = model.forward_head(tokens, frame_pad).numpy()
    texts = greedy_decode(emissions, CTCVocabulary.from_head(ckpt.head.to_dict()), padding_mask=frame_pad.numpy())
    assert texts == [t.upper() for t in TEXTS]
    val = [r for r in read_metrics(out / "metrics.jsonl") if "val_wer" in r]
    assert [r["step"] for r in val] == [20, 40, 60, 80] and val[-1]["val_wer"] == 0.0


def test_extractor_never_takes_a_gradient_and_frozen_steps_train_only_the_head(spoken_digits):
    torch.manual_seed(0)
    model = build_encoder(tiny_config("audio").encoder, ctc_head(["<blank>", "|", "E", "N", "O", "S", "V"]))
    model.input_encoder.local_encoder.extractor.requires_grad_(False)
    trainer = CTCEmissions(model.train(), CTCMasking(mask_channel_length=3))
    wav = torch.from_numpy(spoken_digits[0])[None]  # "seven"
    targets = torch.tensor([[5, 2, 6, 2, 3]])
    for frozen, keys in itertools.product((True, False), (None, [0])):  # the extractor run, or its output reused
        model.zero_grad(set_to_none=True)
        emissions, frames = trainer(wav, torch.zeros_like(wav, dtype=torch.bool), np.random.default_rng(0),
                                    freeze_encoder=frozen, keys=keys)
        assert emissions.shape == (1, int(frames[0]), 7)
        ctc_loss(emissions, frames, targets, torch.tensor([5]), 0).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert all(g is None for n, g in grads.items() if ".extractor." in n)
        assert all(grads[n] is not None for n in ("head.proj.weight", "head.proj.bias"))
        encoder = [n for n in grads if not n.startswith("head.") and ".extractor." not in n]
        assert all((grads[n] is None) == frozen for n in encoder if "alibi" not in n), frozen


@torch.no_grad()
def test_reused_extractor_output_equals_running_it(spoken_digits):
    """Each clip's extractor output is computed once, alone, and reused in any batch: the emissions equal
    the plain forward's (to float rounding), whatever the batch and its padding."""
    torch.manual_seed(0)
    model = build_encoder(tiny_config("audio").encoder, ctc_head(["<blank>", "|", "E", "N", "O", "S", "V"])).eval()
    trainer = CTCEmissions(model, CTCMasking())
    x, pad = pad_waveforms(spoken_digits[:3])
    plain, frames = trainer(x, pad, None)
    torch.testing.assert_close(plain, model(x, pad))
    cached, cached_frames = trainer(x, pad, None, keys=[10, 11, 12])
    assert torch.equal(frames, cached_frames) and sorted(trainer.extracted) == [10, 11, 12]
    real = torch.arange(plain.shape[1])[None] < frames[:, None]
    torch.testing.assert_close(cached[real], plain[real], atol=1e-5, rtol=1e-5)
    first = trainer.extracted[12]
    y, ypad = pad_waveforms([spoken_digits[2], spoken_digits[0]])  # other batch, other padding: reused as is
    again, again_frames = trainer(y, ypad, None, keys=[12, 10])
    assert trainer.extracted[12] is first and again_frames.tolist() == frames[[2, 0]].tolist()
    for row, b in ((0, 2), (1, 0)):
        n = int(frames[b])
        torch.testing.assert_close(again[row, :n], cached[b, :n], atol=1e-5, rtol=1e-5)


def test_encoder_is_frozen_for_the_first_updates(tmp_path, commands_dir):
    """A real run from a checkpoint, 2 of 3 updates frozen: after 1 and 2 only the head moved; after 3
    the Transformer moved too; the feature extractor never."""
    init = tmp_path / "init"
    cfg = tiny_config("audio").encoder
    torch.manual_seed(1)
    save_checkpoint(init, build_encoder(cfg), CheckpointConfig("init", cfg))
    out = tmp_path / "run"
    assert main(["finetune", "--task", "ctc", "--init", str(init), "--data", str(commands_dir), "--out", str(out),
                 "--steps", "3", "--freeze-finetune-updates", "2", "--batch-size", "4", "--lr", "1e-3",
                 "--phase-ratio", "0", "1", "0", "--checkpoint-every", "1", "--keep-checkpoints", "5", "--log-every", "1",
                 "--progress", "false"]) == 0
    start = load_file(str(init / "model.safetensors"))  # the encoder; the head is new
    step = {s: load_file(str(out / "checkpoints" / f"step-{s:08d}" / "student.safetensors")) for s in (1, 2, 3)}
    for s in (1, 2):
        assert all(step[s][k].equal(v) for k, v in start.items()), s  # frozen: the encoder did not move
    assert not step[2]["head.proj.weight"].equal(step[1]["head.proj.weight"])  # the head did
    assert all(step[3][k].equal(v) for k, v in start.items() if ".extractor." in k)  # never trained
    blocks = [k for k in start if k.startswith("blocks.") and k.endswith("weight")]
    assert blocks and all(not step[3][k].equal(start[k]) for k in blocks)
    flags = [r["frozen"] for r in read_metrics(out / "metrics.jsonl") if "frozen" in r]
    assert flags == [True, True, False]


# --- exact resume after SIGKILL ---------------------------------------------------------------------

STEPS, EVERY = 40, 5
EXACT = ("loss", "lr", "grad_norm", "frozen", "samples", "val_wer", "val_cer", "val_exact")


def _command(data, out, model):
    """The reference masks, layerdrop and activation dropout, 4 frozen updates: every random draw."""
    return [sys.executable, "-m", "d2v.cli", "finetune", "--task", "ctc", "--modality", "audio", "--model-config",
            str(model), "--data", str(data), "--out", str(out), "--steps", str(STEPS), "--batch-size", "4",
            "--freeze-finetune-updates", "4", "--mask-channel-length", "4", "--val-every", str(EVERY),
            "--log-every", "1", "--keep-checkpoints", "10", "--progress", "false"]


def test_killed_run_resumes_exactly(tmp_path, commands_dir):
    model = tiny_json(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_command(commands_dir, tmp_path / "whole", model), check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_command(commands_dir, run, model), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    kill_when(proc, latest.exists)
    assert not (run / "results.json").exists()
    assert EVERY <= max(r["step"] for r in read_metrics(run / "metrics.jsonl")) < STEPS

    again = subprocess.run(_command(commands_dir, run, model), check=False, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a run; pass --resume true" in again.stderr
    subprocess.run(_command(commands_dir, run, model) + ["--resume", "true"], check=True, env=env, capture_output=True)
    whole, resumed = read_metrics(tmp_path / "whole" / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    assert [r["step"] for r in whole if "loss" in r] == list(range(1, STEPS + 1))
    for a, b in zip(whole, resumed, strict=True):
        assert {k: a.get(k) for k in EXACT} == {k: b.get(k) for k in EXACT}, a["step"]
    for f in (f"checkpoints/step-{STEPS:08d}/student.safetensors", "best/model.safetensors"):
        wa, wb = load_file(str(tmp_path / "whole" / f)), load_file(str(run / f))
        assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa), f
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (tmp_path / "whole", run))
    assert {k: v for k, v in ra.items() if k != "elapsed_s"} == {k: v for k, v in rb.items() if k != "elapsed_s"}

    changed = subprocess.run(_command(commands_dir, run, model) + ["--resume", "true", "--mask-prob", "0.3"],
                             check=False, env=env, capture_output=True, text=True)
    assert changed.returncode == 2 and "mask_prob differ(s) from the checkpointed run" in changed.stderr


# --- one line, exit 2 -----------------------------------------------------------------------------


@pytest.mark.parametrize("row, message", [
    ({"path": "0.flac"}, 'train.jsonl:2: no "text" (the transcript; --task ctc needs one for every clip)'),
    ({"path": "0.flac", "text": ""}, 'train.jsonl:2: "text" is empty'),
    ({"path": "0.flac", "text": "left | right"}, "train.jsonl:2: \"text\" holds '|', which is reserved"),
])
def test_bad_manifest_is_one_line(tmp_path, handful, capsys, row, message):
    write_manifest(tmp_path / "train.jsonl", [{"path": str(handful / "0.flac"), "text": "stop"}, row])
    rc = main(["finetune", "--task", "ctc", "--modality", "audio", "--data", str(tmp_path), "--out",
               str(tmp_path / "run"), "--progress", "false"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("d2v finetune: ") and message in err and "\n" not in err


@pytest.mark.parametrize("args, message", [
    (["--modality", "audio", "--mask-prob", "0.3"], "--mask-prob applies to --task ctc only"),
    (["--modality", "audio", "--resume", "true", "--steps", "5"], "--steps, --resume apply to --task ctc only"),
    (["--task", "ctc", "--modality", "image"], "--task ctc fine-tunes audio models"),
    (["--task", "ctc", "--modality", "audio", "--labels-per-class", "3"], "--labels-per-class applies to --task classify"),
    (["--task", "ctc", "--modality", "audio", "--phase-ratio", "0.5", "0.5", "0.5"], "summing to 1"),
    (["--task", "ctc", "--modality", "audio", "--val-split", "nope"], "no manifest for the split 'nope'"),
])
def test_bad_settings_are_one_line(tmp_path, handful, capsys, args, message):
    rc = main(["finetune", "--data", str(handful), "--out", str(tmp_path / "run"), "--progress", "false", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err, err


def test_unseen_characters_at_evaluation_are_named_and_count_as_errors(tmp_path, handful, caplog):
    write_manifest(tmp_path / "train.jsonl", [{"path": str(handful / "0.flac"), "text": "stop"}])
    write_manifest(tmp_path / "validation.jsonl", [{"path": str(handful / "1.flac"), "text": "go back!"}])
    write_manifest(tmp_path / "test.jsonl", [{"path": str(handful / "1.flac"), "text": "go back!"}])
    with caplog.at_level("WARNING", logger="d2v.training"):
        assert main(["finetune", "--task", "ctc", "--modality", "audio", "--model-config", tiny_json(tmp_path),
                     "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "1",
                     "--progress", "false"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "no training transcript has" in r.getMessage()]
    assert len(warnings) == 2 and all("'A' x1" in w and "'!' x1" in w for w in warnings)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["vocabulary"] == ["<blank>", "|", "O", "P", "S", "T"] and results["test_wer"] == 1.0
