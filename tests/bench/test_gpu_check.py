"""bench/gpu_check.sh, as far as a machine without a GPU can check it: the script parses, the GPU tests
it runs are collected (they import and select by the `gpu` marker), the benchmarks it calls start,
the attention benchmark's code paths run on the CPU, and the time budget holds."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_dry_run_checks_every_step_a_gpu_machine_will_run(tmp_path):
    out = tmp_path / "gpu-check.md"
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run", "--out", str(out)], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=300, check=False)
    report = out.read_text()
    assert done.returncode == 0, done.stderr + report
    for section in ("## Script syntax", "## GPU tests collect", "## Kernel benchmark: roofline, and a smoke run",
                    "## Serving benchmark"):
        assert section in report
    assert int(re.search(r"(\d+) tests collected", report).group(1)) >= 30
    assert "test_the_demo_models_on_cuda_answer_as_on_the_cpu" in report
    assert "| attention | audio 1500 fr ALiBi | fwd |" in report  # the roofline table
    # the smoke run: SDPA backends that take a padded ALiBi case on the CPU answer, the CUDA-only ones refuse
    assert re.search(r"\| smoke 24 tok ALiBi \| sdpa math \| [0-9.]+ \|.*max err", report)
    assert re.search(r"\| smoke 24 tok ALiBi \| flex attention \| [0-9.]+ \|.*max err", report)
    assert "| smoke 24 tok ALiBi | sdpa efficient_attention | rejects |" in report
    assert "total:" not in report and "skipped" not in report


def test_a_spent_budget_skips_the_remaining_steps(tmp_path):
    out = tmp_path / "gpu-check.md"
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run", "--budget", "0", "--out", str(out)], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=60, check=False)
    report = out.read_text()
    assert done.returncode == 1
    assert report.count("**skipped**: 0 s of the 0 s budget left") == 4


def test_unknown_arguments_are_refused(tmp_path):
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--fast"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--budget", "soon"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 2 and "--budget takes whole seconds, not soon" in done.stderr
