"""`d2v convert FILE.pt` of fairseq data2vec 2.0 checkpoints: the five reference checkpoints in
tests/fixtures/fairseq_d2v2 (real fairseq files, read with the real torch.load) are converted,
reloaded and compared with the outputs fairseq computed from them, array by array."""

import argparse
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from d2v.ctc import CTCVocabulary, greedy_decode, greedy_ids
from d2v.model.checkpoint import CheckpointError, load_checkpoint
from d2v.model.encoders.image import sincos_2d
from d2v.model.importers import ConversionWarning, add_convert_arguments, convert, run_convert
from d2v.model.importers.fairseq import map_fairseq, parse_conv_spec
from d2v.model.importers.safe_pickle import load_fairseq_checkpoint, to_plain

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fairseq_d2v2"
TOL = 1e-4  # the fixtures' suggested fp32 tolerance; measured diffs are ~1e-6 (docs/importing.md)


def fixture(name: str) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    d = FIXTURES / name
    return d / "checkpoint.pt", dict(np.load(d / "inputs.npz")), dict(np.load(d / "expected.npz"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> the loaded d2v model and config of the converted fixture (converted once per module)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            out = tmp_path_factory.mktemp("converted") / name
            with pytest.warns(ConversionWarning) if name == "text" else contextlib.nullcontext():
                convert(fixture(name)[0], out)
            cache[name] = load_checkpoint(out)
        return cache[name]

    return get


def diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@torch.no_grad()
def test_image(converted):
    model, cfg = converted("image")
    _, inputs, expected = fixture("image")
    x = torch.from_numpy(inputs["images"])
    alone = torch.cat([model.forward_features(x[i : i + 1])[0] for i in range(len(x))])
    batch, pad = model.forward_features(x)
    assert pad is None and cfg.encoder.image.stored_pos_embed and cfg.head is None
    assert diff(alone, expected["features"]) < TOL
    assert diff(batch, expected["features_batch"]) < TOL
    assert diff(model.pool(batch, None, "mean"), expected["pooled"]) < TOL
    assert cfg.preprocessing["mean"] == pytest.approx(inputs["mean"].tolist())
    assert cfg.preprocessing["std"] == pytest.approx(inputs["std"].tolist())
    assert cfg.encoder.norm_eps == 1e-6 and cfg.encoder.prenet_depth == 1


@torch.no_grad()
def test_image_classifier(converted):
    model, cfg = converted("image_finetuned")
    _, inputs, expected = fixture("image_finetuned")
    assert cfg.head.type == "mean_pool" and cfg.head.labels == [str(i) for i in range(10)]
    x = torch.from_numpy(inputs["images"])
    alone = [model.forward_features(x[i : i + 1])[0] for i in range(len(x))]
    batch, _ = model.forward_features(x)
    assert diff(torch.cat(alone), expected["features"]) < TOL
    assert diff(model.pool(batch, None), expected["pooled"]) < TOL
    assert diff(model.forward_head(batch, None, pre_logits=True), expected["pooled_fc_norm"]) < TOL
    assert diff(torch.cat([model.forward_head(t) for t in alone]), expected["logits"]) < TOL
    assert diff(model(x), expected["logits_batch"]) < TOL


@torch.no_grad()
def test_audio(converted):
    """Per clip against fairseq's per-clip outputs; the padded batch against the same per-clip outputs
    (fairseq's own padded batch lets padding into the positional convolution, d2v's does not)."""
    model, cfg = converted("audio")
    _, inputs, expected = fixture("audio")
    a = cfg.encoder.audio
    assert a.conv_layers == [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2 and not a.conv_bias
    assert (a.conv_pos_kernel, a.conv_pos_depth, a.conv_pos_groups, a.use_alibi, a.normalize) == (19, 5, 16, True, True)
    wav, pad = torch.from_numpy(inputs["waveforms"]), torch.from_numpy(inputs["padding_mask"])
    batch, frames = model.forward_features(wav, pad)
    assert np.array_equal(frames.numpy(), expected["frame_padding_mask"])
    for i, n in enumerate(inputs["lengths"]):
        alone, _ = model.forward_features(wav[i : i + 1, :n])
        ref = expected[f"features_{i}"]
        assert diff(alone[0], ref) < TOL
        assert diff(batch[i, : len(ref)], ref) < TOL
    assert diff(model.pool(batch, frames), expected["pooled"]) < TOL


@torch.no_grad()
def test_text(converted):
    model, cfg = converted("text")
    _, inputs, expected = fixture("text")
    t = cfg.encoder.text
    assert (t.vocab_size, t.pad_id, t.max_positions, t.embed_norm_eps) == (120, 1, 64, 1e-5)
    assert cfg.preprocessing["tokenizer"] is None
    tokens = torch.from_numpy(inputs["tokens"])
    batch, pad = model.forward_features(tokens)
    assert np.array_equal(pad.numpy(), inputs["padding_mask"])
    for i, n in enumerate(inputs["lengths"]):
        alone, _ = model.forward_features(tokens[i : i + 1, :n])
        assert diff(alone[0], expected[f"features_{i}"]) < TOL
        assert diff(batch[i, :n], expected["features_batch"][i, :n]) < TOL
    assert diff(model.pool(batch, pad), expected["pooled"]) < TOL


@torch.no_grad()
def test_ctc(converted):
    model, cfg = converted("audio_ctc")
    _, inputs, expected = fixture("audio_ctc")
    head = cfg.head
    symbols = ["<s>", "<pad>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R"]
    assert (head.type, head.labels, head.blank_id, head.word_delimiter, head.ignore_ids) == ("ctc", symbols, 0, "|", [2])
    vocab = CTCVocabulary.from_head(head.to_dict())
    wav, pad = torch.from_numpy(inputs["waveforms"]), torch.from_numpy(inputs["padding_mask"])
    tokens, frames = model.forward_features(wav, pad)
    batch = model.forward_head(tokens, frames)  # (B, T, V)
    assert np.array_equal(frames.numpy(), expected["frame_padding_mask"])
    for i, n in enumerate(inputs["lengths"]):
        feats, _ = model.forward_features(wav[i : i + 1, :n])
        emissions = model.forward_head(feats)[0]
        ref = expected[f"emissions_{i}"]
        assert diff(feats[0], expected[f"features_{i}"]) < TOL
        assert diff(emissions, ref) < TOL
        assert diff(torch.log_softmax(emissions, -1), expected[f"log_probs_{i}"]) < TOL
        assert diff(batch[i, : len(ref)], ref) < TOL
        assert greedy_ids(emissions.numpy(), blank_id=head.blank_id) == expected[f"tokens_{i}"].tolist()
    # padded frames are certain blanks, as in fairseq (which writes -inf where d2v writes -1e4)
    padded = expected["frame_padding_mask"]
    ref = expected["emissions_batch"][padded]
    assert np.array_equal(batch.numpy()[padded], np.where(np.isneginf(ref), -1e4, ref))
    # the longest clip has no padding: fairseq's batch row equals d2v's
    assert diff(batch[1], expected["emissions_batch"][1]) < TOL
    per_clip = [greedy_decode(model.forward_head(model.forward_features(wav[i : i + 1, :n])[0]).numpy(), vocab)[0]
                for i, n in enumerate(inputs["lengths"])]
    assert per_clip == expected["transcripts"].tolist()
    # d2v's padded batch transcribes like the clips alone (fairseq's batch does not: see the README)
    assert greedy_decode(batch.numpy(), vocab, padding_mask=frames.numpy()) == expected["transcripts"].tolist()
    assert greedy_decode(batch.numpy(), vocab) == expected["transcripts"].tolist()  # padded frames read as blanks


def test_stored_position_table_is_kept(tmp_path):
    """The fp16-stored sin-cos table is saved in model.safetensors and used as it is."""
    convert(fixture("image")[0], tmp_path / "d2v")
    weights = load_file(str(tmp_path / "d2v" / "model.safetensors"))
    stored = load_fairseq_checkpoint(fixture("image")[0])["model"]["modality_encoders.IMAGE.fixed_positional_encoder.positions"]
    assert torch.equal(weights["encoders.image.pos_embed"], stored.float())
    assert (sincos_2d(48, 4)[None] - stored.float()).abs().max() > 1e-4  # recomputing it would cost this much
    config = json.loads((tmp_path / "d2v" / "config.json").read_text())
    assert config["encoder"]["image"]["stored_pos_embed"] is True


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype(tmp_path, dtype):
    convert(fixture("image_finetuned")[0], tmp_path / "d2v", dtype=dtype)
    weights = load_file(str(tmp_path / "d2v" / "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {getattr(torch, dtype)}
    if dtype == "float16":  # fp16 students are stored bit for bit
        source = load_fairseq_checkpoint(fixture("image_finetuned")[0])["model"]
        assert torch.equal(weights["head.fc.weight"], source["head.weight"])


def test_student_weights_are_upcast(tmp_path):
    convert(fixture("audio")[0], tmp_path / "d2v")
    weights = load_file(str(tmp_path / "d2v" / "model.safetensors"))
    source = load_fairseq_checkpoint(fixture("audio")[0])["model"]
    assert {v.dtype for v in weights.values()} == {torch.float32}
    assert torch.equal(weights["blocks.1.mlp.fc2.weight"], source["blocks.1.mlp.fc2.weight"].float())
    assert torch.equal(weights["encoders.audio.alibi.alibi_scale"], source["modality_encoders.AUDIO.alibi_scale"].float().flatten())
    _, cfg = load_checkpoint(tmp_path / "d2v")
    assert cfg.provenance["weights"] == "student" and cfg.provenance["source_model_type"] == "fairseq data2vec_multi (AUDIO)"


@pytest.mark.parametrize("name, student_only", [
    ("image", []),
    ("audio", ["modality_encoders.AUDIO.local_encoder", "modality_encoders.AUDIO.project_features"]),
    ("text", ["modality_encoders.TEXT.local_encoder"]),
])
def test_ema_teacher(tmp_path, name, student_only):
    src = fixture(name)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        convert(src, tmp_path / "d2v", ema=True)
    messages = " ".join(str(w.message) for w in caught if "--ema" in str(w.message))
    assert bool(messages) == bool(student_only)
    _, cfg = load_checkpoint(tmp_path / "d2v")
    assert cfg.provenance["weights"] == "ema" and cfg.provenance["from_student"] == student_only
    for module in student_only:
        assert module in messages
    weights = load_file(str(tmp_path / "d2v" / "model.safetensors"))
    source = load_fairseq_checkpoint(src)["model"]
    ema = source["_ema"]
    teacher_key = "0.mlp.fc1.weight" if name == "text" else "blocks.0.mlp.fc1.weight"
    assert torch.equal(weights["blocks.0.mlp.fc1.weight"], ema[teacher_key])
    assert not torch.equal(ema[teacher_key], source["blocks.0.mlp.fc1.weight"].float())
    if name == "audio":  # the extractor is the student's
        assert torch.equal(weights["encoders.audio.local_encoder.proj.weight"],
                           source["modality_encoders.AUDIO.project_features.2.weight"].float())
    if name == "image":
        assert torch.equal(weights["encoders.image.cls_token"], ema["modality_encoders.IMAGE.extra_tokens"])


def test_ema_of_a_finetuned_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no EMA teacher"):
        convert(fixture("image_finetuned")[0], tmp_path / "d2v", ema=True)
    assert not (tmp_path / "d2v").exists()


def test_labels(tmp_path):
    labels = [f"class {i}" for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    convert(fixture("image_finetuned")[0], tmp_path / "d2v", labels=tmp_path / "labels.txt")
    _, cfg = load_checkpoint(tmp_path / "d2v")
    assert cfg.head.labels == labels


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="d2v convert")
    add_convert_arguments(parser)
    return run_convert(parser.parse_args([str(a) for a in argv]))


def _one_error_line(capsys, *needles: str) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("d2v convert: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_cli_converts_and_reports(tmp_path, capsys):
    from d2v.cli import main

    (tmp_path / "labels.txt").write_text("\n".join("abcdefghij"))
    argv = [fixture("image_finetuned")[0], "--out", tmp_path / "d2v", "--labels", tmp_path / "labels.txt",
            "--dtype", "float32"]
    assert main(["convert", *map(str, argv)]) == 0
    assert str(tmp_path / "d2v") in capsys.readouterr().out
    _, cfg = load_checkpoint(tmp_path / "d2v")
    assert cfg.head.labels == list("abcdefghij") and cfg.name == "checkpoint"


def test_cli_wrong_label_count(tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    assert _run([fixture("image_finetuned")[0], "--out", tmp_path / "d2v", "--labels", tmp_path / "labels.txt"]) == 2
    _one_error_line(capsys, "2 labels given", "10 classes")
    assert not (tmp_path / "d2v").exists()
    assert _run([fixture("audio")[0], "--out", tmp_path / "d2v", "--labels", tmp_path / "labels.txt"]) == 2
    _one_error_line(capsys, "--labels applies to image classifiers")
    assert not (tmp_path / "d2v").exists()


def test_cli_truncated_checkpoint(tmp_path, capsys):
    data = fixture("audio")[0].read_bytes()
    for cut in (len(data) // 2, 100):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        assert _run([tmp_path / "cut.pt", "--out", tmp_path / "d2v"]) == 2
        _one_error_line(capsys, "cut.pt", "not a readable PyTorch checkpoint")
        assert not (tmp_path / "d2v").exists()


def _resave(tmp_path: Path, name: str, edit) -> Path:
    """The fixture with its cfg turned into plain dicts, edited by `edit(cfg, checkpoint)`, saved with
    plain torch.save (the CTC dictionary in task_state cannot be pickled back, so it is dropped)."""
    checkpoint = load_fairseq_checkpoint(fixture(name)[0])
    checkpoint["cfg"] = to_plain(checkpoint["cfg"])
    checkpoint["task_state"] = {}
    edit(checkpoint["cfg"], checkpoint)
    path = tmp_path / f"{name}-edited.pt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("name, arch", [("wav2vec2", "wav2vec 2.0"), ("roberta", "RoBERTa")])
def test_cli_other_architectures(tmp_path, capsys, name, arch):
    """Small wav2vec 2.0 / RoBERTa checkpoints as fairseq writes them (plain-dict cfg here)."""
    conv = torch.nn.Conv1d(1, 8, 10, 5, bias=False)
    state = {"feature_extractor.conv_layers.0.0.weight": conv.weight.detach()} if name == "wav2vec2" else {
        "encoder.sentence_encoder.embed_tokens.weight": torch.zeros(10, 8)}
    torch.save({"cfg": {"model": {"_name": name, "encoder_embed_dim": 8}, "task": {}}, "model": state},
               tmp_path / f"{name}.pt")
    assert _run([tmp_path / f"{name}.pt", "--out", tmp_path / "d2v"]) == 2
    _one_error_line(capsys, f"{name}.pt", arch, f"model._name='{name}'")
    assert not (tmp_path / "d2v").exists()


def test_cli_ctc_over_wav2vec2_is_refused(tmp_path, capsys):
    def edit(cfg, _):
        cfg["model"]["w2v_args"]["model"]["_name"] = "wav2vec2"
    path = _resave(tmp_path, "audio_ctc", edit)
    assert _run([path, "--out", tmp_path / "d2v"]) == 2
    _one_error_line(capsys, "model.w2v_args.model._name='wav2vec2'", "wav2vec 2.0")
    assert not (tmp_path / "d2v").exists()


@pytest.mark.parametrize("name, path, value, needle", [
    ("image", ("model", "layer_norm_first"), True, "model.layer_norm_first=True"),
    ("audio", ("model", "modalities", "audio", "extractor_mode"), "default", "model.modalities.audio.extractor_mode='default'"),
    ("audio", ("model", "modalities", "audio", "conv_pos_pre_ln"), True, "model.modalities.audio.conv_pos_pre_ln=True"),
    ("audio", ("model", "modalities", "audio", "learned_alibi_scale_per_layer"), True, "learned_alibi_scale_per_layer"),
    ("text", ("model", "modalities", "text", "no_scale_embedding"), False, "model.modalities.text.no_scale_embedding=False"),
    ("image_finetuned", ("model", "prediction_mode"), "CLS_TOKEN", "model.prediction_mode='CLS_TOKEN'"),
    ("image_finetuned", ("model", "pretrained_model_args", "model", "modalities", "image", "num_extra_tokens"), 0,
     "model.pretrained_model_args.model.modalities.image.num_extra_tokens=0"),
    ("audio_ctc", ("model", "w2v_args", "model", "layer_norm_first"), True, "model.w2v_args.model.layer_norm_first=True"),
    ("audio_ctc", ("model", "w2v_args", "model", "modalities", "audio", "feature_encoder_spec"),
     "__import__('os').system('touch x')", "model.w2v_args.model.modalities.audio.feature_encoder_spec"),
])
def test_cli_unsupported_cfg_value(tmp_path, capsys, name, path, value, needle):
    def edit(cfg, _):
        section = cfg
        for key in path[:-1]:
            section = section[key]
        section[path[-1]] = value
    src = _resave(tmp_path, name, edit)
    assert _run([src, "--out", tmp_path / "d2v"]) == 2
    _one_error_line(capsys, needle)
    assert not (tmp_path / "d2v").exists()


@torch.no_grad()
def test_unknown_cfg_keys_are_ignored(tmp_path):
    def edit(cfg, _):
        cfg["model"]["a_future_setting"] = {"nested": [1, 2]}
        cfg["model"]["modalities"]["image"]["another_one"] = "x"
    convert(_resave(tmp_path, "image", edit), tmp_path / "d2v")
    model, _ = load_checkpoint(tmp_path / "d2v")
    _, inputs, expected = fixture("image")
    assert diff(model.forward_features(torch.from_numpy(inputs["images"]))[0], expected["features_batch"]) < TOL


@pytest.mark.parametrize("mode, value", [("add", 1.5), ("set", -2.0)])
@torch.no_grad()
def test_ctc_blank_weight_is_folded(tmp_path, mode, value):
    """fairseq's get_logits adds to (or sets) class 0's logit: folded into the output layer exactly."""
    def edit(cfg, checkpoint):
        cfg["model"]["blank_weight"], cfg["model"]["blank_mode"] = value, mode
    src = _resave(tmp_path, "audio_ctc", edit)
    with pytest.warns(ConversionWarning, match="blank_weight"):
        convert(src, tmp_path / "d2v", dictionary=FIXTURES / "audio_ctc" / "dict.ltr.txt")
    model, _ = load_checkpoint(tmp_path / "d2v")
    _, inputs, expected = fixture("audio_ctc")
    n = int(inputs["lengths"][0])
    emissions = model.forward_head(model.forward_features(torch.from_numpy(inputs["waveforms"][:1, :n]))[0])[0]
    ref = expected["emissions_0"].copy()
    ref[:, 0] = ref[:, 0] + value if mode == "add" else value
    assert diff(emissions, ref) < TOL


def test_ctc_dictionary_sources(tmp_path, capsys):
    """The dictionary in task_state; else --dict; else dict.ltr.txt beside the .pt; else an error."""
    src = _resave(tmp_path, "audio_ctc", lambda cfg, ckpt: None)  # task_state emptied
    assert _run([src, "--out", tmp_path / "a"]) == 2
    _one_error_line(capsys, "dictionary was not found")
    assert not (tmp_path / "a").exists()

    assert _run([src, "--out", tmp_path / "a", "--dict", FIXTURES / "audio_ctc" / "dict.ltr.txt"]) == 0
    _, cfg = load_checkpoint(tmp_path / "a")
    assert cfg.head.labels[4:] == ["|", "E", "T", "A", "O", "N", "I", "H", "S", "R"]

    (tmp_path / "dict.ltr.txt").write_bytes((FIXTURES / "audio_ctc" / "dict.ltr.txt").read_bytes())
    assert _run([src, "--out", tmp_path / "b"]) == 0
    assert "dict.ltr.txt" in capsys.readouterr().err  # a warning says where the vocabulary came from
    assert load_checkpoint(tmp_path / "b")[1].head.labels == cfg.head.labels

    (tmp_path / "short.txt").write_text("| 5\nE 3\n")
    assert _run([fixture("audio_ctc")[0], "--out", tmp_path / "c", "--dict", tmp_path / "short.txt"]) == 2
    _one_error_line(capsys, "differs from the one in the checkpoint")
    assert _run([src, "--out", tmp_path / "c", "--dict", tmp_path / "short.txt"]) == 2
    _one_error_line(capsys, "6 symbols", "14 outputs")
    assert not (tmp_path / "c").exists()


class _RunsCode:
    """Unpickling this calls `func(arg)`: what a malicious checkpoint would do."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func, global_name", [(os.system, "posix.system"), (exec, "builtins.exec")])
def test_code_in_the_pickle_never_runs(tmp_path, capsys, func, global_name):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    checkpoint = load_fairseq_checkpoint(fixture("image")[0])
    checkpoint["cfg"] = to_plain(checkpoint["cfg"])
    checkpoint["extra_state"] = _RunsCode(func, arg)
    torch.save(checkpoint, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=f"refusing to load: the pickle names {global_name}"):
        load_fairseq_checkpoint(tmp_path / "evil.pt")
    assert _run([tmp_path / "evil.pt", "--out", tmp_path / "d2v"]) == 2
    _one_error_line(capsys, "evil.pt", global_name)
    assert not marker.exists() and not (tmp_path / "d2v").exists()


def test_no_omegaconf_or_fairseq_needed():
    checkpoint = load_fairseq_checkpoint(fixture("audio_ctc")[0])
    assert "omegaconf" not in sys.modules and "fairseq" not in sys.modules
    cfg = to_plain(checkpoint["cfg"])
    assert cfg["model"]["_name"] == "wav2vec_ctc" and cfg["task"]["normalize"] is True
    assert checkpoint["task_state"]["target_dictionary"].state["symbols"][4] == "|"


def test_conv_spec_is_parsed_not_evaluated():
    spec = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
    assert parse_conv_spec(spec, "k") == [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2
    for bad in ("__import__('os')", "[(1, 2)]", "[]", "[(1, 2, 3)] * (10 ** 9)", "[(1, 2, 3)] * 1000000000", "[(1.5, 2, 3)]"):
        with pytest.raises(ValueError, match="cfg key k="):
            parse_conv_spec(bad, "k")


def test_one_alibi_scale_for_all_heads():
    """learned_alibi_scale_per_head=False stores one scale (1, 1, 1, 1, 1): every head gets it."""
    checkpoint = load_fairseq_checkpoint(fixture("audio")[0])
    checkpoint["cfg"] = to_plain(checkpoint["cfg"])
    checkpoint["cfg"]["model"]["modalities"]["audio"]["learned_alibi_scale_per_head"] = False
    checkpoint["model"]["modality_encoders.AUDIO.alibi_scale"] = torch.full((1, 1, 1, 1, 1), 0.75)
    imported = map_fairseq(checkpoint)
    assert torch.equal(imported.state["encoders.audio.alibi.alibi_scale"], torch.full((6,), 0.75))
