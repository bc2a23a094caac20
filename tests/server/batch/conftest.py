"""Batch-job fixtures: small file systems of their own (tmpfs), to fill up or make read-only."""

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class Tmpfs:
    """A tmpfs mounted at `path` (root only); `remount` changes its size or makes it read-only."""

    def __init__(self, path: Path, size: str):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                              check=False, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True, capture_output=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[str], Tmpfs]]:
    """`tmpfs("64k")` mounts a tmpfs of that size under tmp_path; skips where that is not allowed."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Tmpfs] = []

    def mount(size: str) -> Tmpfs:
        fs = Tmpfs(tmp_path / f"fs{len(mounted)}", size)
        mounted.append(fs)
        return fs

    yield mount
    for fs in mounted:
        fs.unmount()
