"""A pretraining run killed with SIGKILL and resumed with --resume gives exactly the loss curve and
the weights of the same run left uninterrupted."""

import json
import os
import signal
import subprocess
import sys
import time

from realdata import tiny_config
from safetensors.torch import load_file

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
    deadline = time.monotonic() + 120
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
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
