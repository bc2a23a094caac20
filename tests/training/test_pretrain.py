"""`d2v pretrain` end to end on real data, a few steps per modality: metrics, training checkpoints,
and an inference checkpoint that `load_checkpoint` reads; a tokenizer trained when none is given;
unreadable files skipped; the collapse guard."""

import json
import logging
import subprocess
import sys

import pytest
import torch
from realdata import tiny_config

from d2v.model import build_data2vec, build_teacher, data2vec_loss
from d2v.model.checkpoint import load_checkpoint
from d2v.training.checkpointing import export_student
from d2v.training.config import PretrainConfig
from d2v.training.metrics import read_metrics
from d2v.training.pretrain import TrainingCollapsed, check_collapse, pretrain


def model_json(tmp_path, modality: str, **changes) -> str:
    """A tiny ModelConfig (dim 32, 2 blocks, M = 3) as a JSON file."""
    cfg = tiny_config(modality)
    for k, v in changes.items():
        setattr(cfg.encoder, k, v)
    path = tmp_path / f"{modality}-model.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return str(path)


def run_config(tmp_path, modality, data, **kw) -> PretrainConfig:
    base = {"out": str(tmp_path / f"run-{modality}"), "model_config": model_json(tmp_path, modality), "steps": 3,
            "batch_size": 4, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 2, "progress": False}
    return PretrainConfig(modality, str(data), **{**base, **kw})


@pytest.fixture
def datasets(digits_dir, speech_dir, wordnet_dir):
    return {"image": digits_dir, "audio": speech_dir, "text": wordnet_dir}


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_pretrain_writes_checkpoints(tmp_path, datasets, modality):
    extra = {"vocab_size": 200, "max_tokens": 32} if modality == "text" else {}
    cfg = run_config(tmp_path, modality, datasets[modality], **extra)
    final = pretrain(cfg)
    run = tmp_path / f"run-{modality}"
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert all(k in r for k in ("loss", "lr", "ema_decay", "target_std", "pred_std", "samples_per_s", "s_per_step"))
        assert r["loss"] > 0 and torch.isfinite(torch.tensor(r["loss"]))
    assert records[0]["lr"] < records[1]["lr"]  # warmup
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000003"]
    model, ckpt = load_checkpoint(final)
    assert ckpt.head is None and ckpt.modality == modality
    assert model.blocks[0].mlp.fc1.weight.dtype == torch.float32
    assert ckpt.provenance["step"] == 3 and ckpt.provenance["kind"] == "pretrain"
    exported, ckpt2 = load_checkpoint(export_student(run / "checkpoints" / "step-00000003", tmp_path / "exported"))
    assert ckpt2.encoder == ckpt.encoder and ckpt2.preprocessing == ckpt.preprocessing
    for k, v in model.state_dict().items():
        assert torch.equal(exported.state_dict()[k], v), k
    saved = json.loads((run / "config.json").read_text())
    assert saved["pretrain"]["lr"] == {"image": 1e-3, "audio": 7.5e-4, "text": 2e-4}[modality]  # reference values
    if modality == "text":
        assert (run / "tokenizer.model").is_file() and (final / "tokenizer.model").is_file()
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(final / "tokenizer.model"))
        assert ckpt.encoder.text.vocab_size == sp.get_piece_size() <= 200
        assert ckpt.preprocessing["tokenizer"] == "tokenizer.model"


def test_text_packed_blocks(tmp_path, wordnet_dir):
    cfg = run_config(tmp_path, "text", wordnet_dir, splits=["train", "unlabelled"], vocab_size=200, max_tokens=32,
                     pack=True)
    pretrain(cfg)
    records = read_metrics(tmp_path / "run-text" / "metrics.jsonl")
    assert records[-1]["masked"] + records[-1]["visible"] == 4 * 3 * 32  # B x M full blocks, no padding
    (tmp_path / "img").mkdir()
    with pytest.raises(ValueError, match="text"):
        pretrain(run_config(tmp_path / "img", "image", wordnet_dir, pack=True))


def test_existing_run_needs_resume(tmp_path, digits_dir):
    pretrain(run_config(tmp_path, "image", digits_dir, steps=2))
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(run_config(tmp_path, "image", digits_dir, steps=2))
    with pytest.raises(ValueError, match="batch_size"):
        pretrain(run_config(tmp_path, "image", digits_dir, steps=2, batch_size=5, resume=True))


def test_unreadable_files_are_skipped(tmp_path, digits_dir, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, src in enumerate(sorted((digits_dir / "train").glob("*/*.png"))[:11]):
        (folder / f"{i}.png").write_bytes(src.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with caplog.at_level(logging.WARNING, logger="d2v.training.data"):
        pretrain(run_config(tmp_path, "image", folder, steps=4))  # 16 draws cover all 12 files
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    assert len(read_metrics(tmp_path / "run-image" / "metrics.jsonl")) == 4


def test_collapse_guard_fires_on_constant_targets(digit_images):
    torch.manual_seed(0)
    cfg = tiny_config("image")
    student = build_data2vec(cfg)
    teacher = build_teacher(student, cfg)
    with torch.no_grad():  # every block's FFN output (the targets) becomes a constant
        for blk in teacher.model.blocks:
            blk.mlp.fc2.weight.zero_()
            blk.mlp.fc2.bias.fill_(0.3)
    logs = data2vec_loss(student, teacher, digit_images[0][:4], generator=torch.Generator().manual_seed(0)).logs
    assert logs["target_std"] < 0.01
    with pytest.raises(TrainingCollapsed, match="target_std"):
        check_collapse(logs, step=5000, min_target_std=0.1, min_pred_std=0.01, after=5000)
    check_collapse(logs, step=4999, min_target_std=0.1, min_pred_std=0.01, after=5000)  # not checked yet
    check_collapse(logs, step=5000, min_target_std=0.0, min_pred_std=0.0, after=5000)  # off (images' default)
    healthy = data2vec_loss(student, build_teacher(student, cfg), digit_images[0][:4],
                            generator=torch.Generator().manual_seed(0)).logs
    check_collapse(healthy, step=5000, min_target_std=0.1, min_pred_std=0.01, after=5000)


def test_collapse_guard_stops_a_run(tmp_path, digits_dir):
    cfg = run_config(tmp_path, "image", digits_dir, min_target_std=100.0, collapse_check_after=2)
    with pytest.raises(TrainingCollapsed, match="step 2"):
        pretrain(cfg)


def test_killed_runs_temporaries_are_removed_at_start(tmp_path, digits_dir):
    """Each temporary is a checkpoint's worth: today's names and the older versions' (`.step-*.tmp`,
    `.final.*`, `.latest.*.tmp`) of dead processes go when a run starts; a live writer's stay."""
    from d2v.atomic import _host

    pretrain(run_config(tmp_path, "image", digits_dir, steps=2))
    run, dead = tmp_path / "run-image", 4194999
    host = _host()
    planted = [run / "checkpoints" / f".step-00000004.{dead}.tmp", run / "checkpoints" / f".latest.{dead}.tmp",
               run / ".final.k2j4x9_a", run / f".final.old-{dead}",
               run / "checkpoints" / f".step-00000004.{host}-{dead}-0a1b2c3d.d2v-tmp",
               run / f".metrics.jsonl.{host}-{dead}-0a1b2c3d.d2v-tmp"]
    for p in planted:
        p.mkdir() if "step" in p.name or "final" in p.name else p.write_text("partial")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live = run / "checkpoints" / f".step-00000004.{host}-{sleeper.pid}-0a1b2c3d.d2v-tmp"
    live.mkdir()
    try:
        pretrain(run_config(tmp_path, "image", digits_dir, steps=2, resume=True))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not [p for p in planted if p.exists()]
    assert live.exists()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]
