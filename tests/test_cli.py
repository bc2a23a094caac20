"""The `d2v` command line stays lean: `d2v --help` imports no subcommand, and `d2v COMMAND --help`
imports only that command's argument definitions, never torch, onnxruntime or pyarrow (each checked
in a fresh interpreter, since this one has imported them all)."""

import json
import subprocess
import sys

import pytest

from d2v.cli import COMMANDS

HEAVY = ("torch", "onnxruntime", "onnx", "pyarrow", "numpy", "scipy", "fastapi", "uvicorn", "pydantic", "safetensors",
         "tokenizers", "sentencepiece", "transformers", "triton", "PIL", "soundfile", "sklearn", "yaml")

PROBE = """
import json, sys
from d2v.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def modules_after(*argv: str) -> tuple[str, set[str]]:
    """Run `d2v ARGV` in a fresh interpreter: (what it printed, the modules it imported)."""
    run = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                         check=True)
    printed, _, modules = run.stdout.rstrip("\n").rpartition("\n")
    return printed, set(json.loads(modules))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.partition(".")[0] in HEAVY)


def test_help_imports_no_subcommand():
    printed, modules = modules_after("--help")
    assert all(f"    {name}" in printed for name in COMMANDS)
    assert heavy(modules) == []
    assert sorted(m for m in modules if m.startswith("d2v")) == ["d2v", "d2v.cli"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_help_imports_only_its_arguments(command):
    printed, modules = modules_after(command, "--help")
    assert printed.startswith(f"usage: d2v {command} ")
    assert heavy(modules) == []
    own = COMMANDS[command].arguments.partition(":")[0]
    others = {c.arguments.partition(":")[0] for c in COMMANDS.values()} - {own}
    assert own in modules and not others & modules
    runs = {c.run.partition(":")[0] for c in COMMANDS.values()} - {own}
    assert not runs & modules  # the implementation is imported when the command runs, not before
