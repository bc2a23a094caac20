"""Training checkpoints: exact round trip of student, teacher, optimizer and RNG; `latest`;
pruning; an interrupted write never counts."""

import torch
from realdata import tiny_config

from d2v.model import build_data2vec, build_teacher
from d2v.training.checkpointing import latest_checkpoint, load_training_checkpoint, save_training_checkpoint


def _parts(seed):
    torch.manual_seed(seed)
    cfg = tiny_config("text")
    student = build_data2vec(cfg)
    teacher = build_teacher(student, cfg)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    student(student.encoder.input_encoder.local_features(torch.randint(4, 100, (2, 9)))[0], None,
            generator=torch.Generator().manual_seed(0)).predictions.sum().backward()
    opt.step()
    return student, teacher, opt


def test_round_trip(tmp_path):
    student, teacher, opt = _parts(0)
    torch.manual_seed(123)
    save_training_checkpoint(tmp_path, 7, student, teacher.model, opt, {"samples": 70, "elapsed": 1.5})
    expected_draw = torch.rand(3)
    s2, t2, o2 = _parts(1)
    state = load_training_checkpoint(latest_checkpoint(tmp_path), s2, t2.model, o2)
    assert state == {"samples": 70, "elapsed": 1.5, "step": 7}
    assert torch.equal(torch.rand(3), expected_draw)  # RNG restored
    for a, b in zip(student.state_dict().values(), s2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(teacher.model.state_dict().values(), t2.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict(), o2.state_dict()
    for k in sa["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa["state"][k][name], sb["state"][k][name])


def test_latest_keep_and_interrupted_writes(tmp_path):
    student, teacher, opt = _parts(0)
    for step in (2, 4, 6):
        save_training_checkpoint(tmp_path, step, student, teacher.model, opt, {}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-00000004", "step-00000006"]
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    # a write killed half-way leaves only a hidden temporary directory: never picked up
    partial = tmp_path / "checkpoints" / ".step-00000008.999.tmp"
    partial.mkdir()
    (partial / "student.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    # a lost `latest` pointer falls back to the newest complete directory
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_checkpoint_preprocessing_records_the_token_limit_and_trimming():
    from d2v.model import preset
    from d2v.preprocessing import TRIM_SILENCE
    from d2v.training.checkpointing import checkpoint_preprocessing

    audio = preset("audio", "tiny").encoder
    assert "trim_silence" not in checkpoint_preprocessing(audio, 128, trim_silence=False)
    assert checkpoint_preprocessing(audio, 128, trim_silence=True)["trim_silence"] == TRIM_SILENCE
    text = preset("text", "tiny").encoder
    pre = checkpoint_preprocessing(text, 10_000, trim_silence=False)
    assert pre["max_tokens"] == text.text.max_positions and pre["tokenizer"] == "tokenizer.model"


def test_a_run_without_a_teacher(tmp_path):
    """CTC fine-tuning checkpoints the model, the optimizer and the RNG, and no teacher."""
    student, _, opt = _parts(0)
    save_training_checkpoint(tmp_path, 3, student, None, opt, {"samples": 12, "elapsed": 0.5, "best": {"step": 3}})
    ckpt = tmp_path / "checkpoints" / "step-00000003"
    assert sorted(p.name for p in ckpt.iterdir()) == ["optimizer.pt", "rng.pt", "state.json", "student.safetensors"]
    other, _, opt2 = _parts(1)
    state = load_training_checkpoint(ckpt, other, None, opt2)
    assert state["best"] == {"step": 3} and state["samples"] == 12
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), other.state_dict().values(),
                                                 strict=True))
