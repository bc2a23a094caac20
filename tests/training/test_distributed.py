"""Two processes under torchrun (CPU, gloo): DDP keeps the students and the EMA teachers of both
ranks identical while each rank trains on its own samples and masks."""

import json
import os
import subprocess
import sys

from realdata import tiny_config

from d2v.model.checkpoint import load_checkpoint


def test_two_processes_hold_identical_weights(tmp_path, digits_dir):
    model = tmp_path / "model.json"
    model.write_text(json.dumps(tiny_config("image").to_dict()))
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "d2v.cli",
           "pretrain", "--modality", "image", "--data", str(digits_dir), "--out", str(out), "--model-config",
           str(model), "--steps", "4", "--batch-size", "3", "--log-every", "1", "--checkpoint-every", "2",
           "--progress", "false", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads((out / "processes.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["student_sha256"] == ranks[1]["student_sha256"]
    assert ranks[0]["teacher_sha256"] == ranks[1]["teacher_sha256"]
    assert ranks[0]["last_local_loss"] != ranks[1]["last_local_loss"]  # different samples and masks per rank
    _, ckpt = load_checkpoint(out / "final")
    assert ckpt.provenance["world_size"] == 2 and ckpt.provenance["samples"] == 4 * 3 * 2
