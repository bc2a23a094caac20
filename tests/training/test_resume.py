"""A pretraining run killed with SIGKILL and resumed with --resume gives exactly the loss curve and
the weights of the same run left uninterrupted; so does a run whose newest checkpoint is damaged
(truncated, empty, reshaped or NaN weights, a truncated or missing optimizer state, a garbage RNG
state, a bad state.json), resumed from the newest intact one."""

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from processes import kill_when
from realdata import tiny_config
from safetensors.torch import load_file, save_file

from d2v.cli import main as cli_main
from d2v.training.metrics import read_metrics

STEPS, EVERY = 24, 6
EXACT = ("loss", "regression_loss", "cls_loss", "target_std", "pred_std", "lr", "ema_decay", "grad_norm", "samples")


def _command(data, out, model):
    return [sys.executable, "-m", "d2v.cli", "pretrain", "--modality", "image", "--data", str(data), "--out", str(out),
            "--model-config", str(model), "--steps", str(STEPS), "--batch-size", "4", "--log-every", "1",
            "--checkpoint-every", str(EVERY), "--keep-checkpoints", "10", "--progress", "false"]


def test_killed_run_resumes_exactly(tmp_path, digits_dir):
    model = tmp_path / "model.json"
    model.write_text(json.dumps(tiny_config("image").to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_command(digits_dir, tmp_path / "whole", model), check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_command(digits_dir, run, model), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    kill_when(proc, latest.exists)
    assert not (run / "final").exists()
    before = len(read_metrics(run / "metrics.jsonl"))
    assert EVERY <= before < STEPS

    subprocess.run(_command(digits_dir, run, model) + ["--resume", "true"], check=True, env=env, capture_output=True)
    whole, resumed = read_metrics(tmp_path / "whole" / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole] == list(range(1, STEPS + 1))
    for a, b in zip(whole, resumed, strict=True):
        assert {k: a[k] for k in EXACT} == {k: b[k] for k in EXACT}, a["step"]
    wa = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    wb = load_file(str(run / "final" / "model.safetensors"))
    assert all(wa[k].equal(wb[k]) for k in wa)


# --- a damaged newest checkpoint ------------------------------------------------------------------

SHORT, SHORT_EVERY = 6, 2


def _short_args(data, out, model):
    return ["pretrain", "--modality", "image", "--data", str(data), "--out", str(out), "--model-config", str(model),
            "--steps", str(SHORT), "--batch-size", "4", "--warmup-steps", "2", "--log-every", "1",
            "--checkpoint-every", str(SHORT_EVERY), "--keep-checkpoints", "10", "--progress", "false"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, digits_dir):
    """An uninterrupted 6-step run with checkpoints at steps 2, 4 and 6 (in this process)."""
    tmp = tmp_path_factory.mktemp("short")
    model = tmp / "model.json"
    model.write_text(json.dumps(tiny_config("image").to_dict()))
    assert cli_main(_short_args(digits_dir, tmp / "whole", model)) == 0
    return digits_dir, tmp / "whole", model


def _truncate(f, keep=0.5):
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])


def _edit_state(f, **changes):
    f.write_text(json.dumps({**json.loads(f.read_text()), **changes}))


def _reshaped(f):
    state = load_file(str(f))
    key = min(k for k in state if k.endswith("weight") and state[k].dim() == 2)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, str(f))


def _poisoned(f):
    state = load_file(str(f))
    key = sorted(state)[3]
    state[key] = state[key].clone().view(-1).index_fill(0, torch.tensor([0]), float("nan")).view(state[key].shape)
    save_file(state, str(f))


DAMAGE = {
    "student truncated": ("student.safetensors", _truncate),
    "student empty": ("student.safetensors", lambda f: f.write_bytes(b"")),
    "teacher cut by 10 bytes": ("teacher.safetensors", lambda f: f.write_bytes(f.read_bytes()[:-10])),
    "student wrong shapes": ("student.safetensors", _reshaped),
    "teacher NaN": ("teacher.safetensors", _poisoned),
    "optimizer truncated": ("optimizer.pt", _truncate),
    "rng garbage": ("rng.pt", lambda f: f.write_bytes(os.urandom(4000))),
    "state not JSON": ("state.json", lambda f: f.write_text('{"step": 6, "sam')),
    "state wrong step": ("state.json", lambda f: _edit_state(f, step="six")),
    "optimizer missing": ("optimizer.pt", lambda f: f.unlink()),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_and_resumes_exactly(tmp_path, short_run, case, caplog):
    """The newest checkpoint (step 6) damaged one way or another: --resume warns, naming the file,
    resumes from step 4 and repeats the uninterrupted run bit for bit."""
    data, whole, model = short_run
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    name, damage = DAMAGE[case]
    damage(run / "checkpoints" / "step-00000006" / name)
    with caplog.at_level(logging.WARNING, logger="d2v.training"):
        assert cli_main(_short_args(data, run, model) + ["--resume", "true"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"step-00000006/{name}" in w for w in warnings), warnings
    assert any("resuming from step-00000004" in w for w in warnings), warnings
    a, b = read_metrics(whole / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, SHORT + 1))
    for x, y in zip(a, b, strict=True):
        assert {k: x.get(k) for k in EXACT} == {k: y.get(k) for k in EXACT}, x["step"]
    wa, wb = load_file(str(whole / "final" / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)
    ta = load_file(str(whole / "checkpoints" / "step-00000006" / "teacher.safetensors"))
    tb = load_file(str(run / "checkpoints" / "step-00000006" / "teacher.safetensors"))  # rewritten whole
    assert all(ta[k].equal(tb[k]) for k in ta)


def test_no_intact_checkpoint_is_one_line_naming_the_file(tmp_path, short_run, capsys):
    data, whole, model = short_run
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    for step in (2, 4, 6):
        (run / "checkpoints" / f"step-{step:08d}" / "rng.pt").write_bytes(b"\x00garbage")
    assert cli_main(_short_args(data, run, model) + ["--resume", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("d2v pretrain: cannot resume") and err.count("\n") == 1, err
    assert "step-00000006/rng.pt" in err and "step-00000002/rng.pt" in err
