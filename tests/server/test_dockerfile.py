"""Lint the GPU serving Dockerfile (no Docker engine runs here). hadolint runs when it is on PATH;
otherwise (and as well) a small linter checks the hadolint rules that matter for this file plus
what the issue asks for: CUDA runtime base, non-root user, models volume, HEALTHCHECK on /health,
`d2v serve` as entrypoint."""

import json
import re
import shutil
import subprocess
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


def lint(text: str) -> list[str]:
    problems = []
    ins = instructions(text)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in ins if op == "ARG" and "=" in a}
    shell_pipefail = False
    for op, a in ins:
        if op == "FROM":
            image = a.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
            if ":" not in image or image.endswith(":latest"):
                problems.append(f"DL3006/DL3007: pin the base image tag: {image}")
            shell_pipefail = False
        if op == "SHELL" and "pipefail" in a:
            shell_pipefail = True
        if op == "ADD" and not re.search(r"https?://|\.tar", a):
            problems.append("DL3020: use COPY instead of ADD for files")
        if op == "RUN":
            if "apt-get install" in a and "--no-install-recommends" not in a:
                problems.append("DL3015: apt-get install without --no-install-recommends")
            if "apt-get install" in a and " -y" not in a:
                problems.append("DL3014: apt-get install without -y")
            if "apt-get install" in a and "rm -rf /var/lib/apt/lists" not in a:
                problems.append("DL3009: delete the apt lists after installing")
            if re.search(r"\bapt-get\s+upgrade|\bapt-get dist-upgrade", a):
                problems.append("DL3005: no apt-get upgrade")
            if re.search(r"\bpip3? install\b", a) and "--no-cache-dir" not in a:
                problems.append("DL3042: pip install without --no-cache-dir")
            if re.search(r"(^|&&|;)\s*cd\s", a):
                problems.append("DL3003: use WORKDIR instead of cd")
            if "sudo " in a:
                problems.append("DL3004: no sudo")
            if "|" in a.replace("||", "") and not shell_pipefail:
                problems.append("DL4006: set -o pipefail before RUN with a pipe")
        if op in ("CMD", "ENTRYPOINT") and not a.startswith("["):
            problems.append(f"DL3025: {op} in JSON form")
    ops = [op for op, _ in ins]
    for op in ("CMD", "ENTRYPOINT", "HEALTHCHECK"):
        if ops.count(op) > 1:
            problems.append(f"DL4003/DL4004: several {op} instructions")
    users = [a for op, a in ins if op == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("DL3002: the last USER must not be root")
    return problems


def test_dockerfile_passes_the_linter():
    assert lint(DOCKERFILE.read_text()) == []


def test_the_linter_catches_mistakes():
    bad = "FROM ubuntu\nRUN apt-get update && apt-get install curl\nRUN cd /x && pip install y | tee\nCMD d2v serve\n"
    found = " ".join(lint(bad))
    for rule in ("DL3006", "DL3015", "DL3014", "DL3009", "DL3042", "DL3003", "DL4006", "DL3025", "DL3002"):
        assert rule in found


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


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
def test_hadolint():
    out = subprocess.run(["hadolint", str(DOCKERFILE)], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
