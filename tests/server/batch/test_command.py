"""`d2v embed` on an output it cannot use or write (a file, a read-only or a full file system): one line
naming the path and why, no traceback, and the job goes on when run again once the cause is gone."""

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from d2v.server.batch.job import EmbedJob, run_embed_job
from d2v.server.batch.store import embedding_matrix


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


def embed(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "d2v.cli", "embed", "--device", "cpu", "--threads", "1", "--no-progress",
           *map(str, args)]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)


def one_line(done: subprocess.CompletedProcess) -> str:
    """The command's stderr, checked to be one `d2v embed:` line (no traceback)."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("d2v embed: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def docs(tmp_path, glosses, n: int):
    f = tmp_path / "docs.txt"
    f.write_text("\n".join(f"{glosses[i % len(glosses)]} ({i})" for i in range(n)) + "\n")
    return f


def test_an_output_that_is_a_file_is_one_line(tmp_path, model_dirs, glosses):
    out = tmp_path / "out.parquet"
    out.write_text("not a directory")
    done = embed("--model", model_dirs["text"], "--input", docs(tmp_path, glosses, 3), "--output", out)
    assert done.returncode == 2
    assert f"{out} is a file, not a directory" in one_line(done)
    assert out.read_text() == "not a directory"
    done = embed("--model", model_dirs["text"], "--input", docs(tmp_path, glosses, 3), "--output", out / "sub")
    assert done.returncode == 2 and "not a directory" in one_line(done)


class ReadOnly:
    """A place that can be made read-only and writable again: a tmpfs remounted read-only (root), else
    a directory without write permission (which does not stop root)."""

    def __init__(self, request, tmp_path):
        self.root = os.geteuid() == 0
        if self.root:
            self.fs = request.getfixturevalue("tmpfs")("4m")
            self.path = self.fs.path
        else:
            self.path = tmp_path / "place"
            self.path.mkdir()

    def read_only(self, on: bool) -> None:
        if self.root:
            self.fs.remount("ro" if on else "rw")
            return
        for d in [self.path, *(p for p in self.path.rglob("*") if p.is_dir())]:
            d.chmod(0o555 if on else 0o755)


def test_a_read_only_output_is_one_line_and_the_job_goes_on_once_it_is_writable(request, tmp_path, model_dirs,
                                                                                 glosses):
    place = ReadOnly(request, tmp_path)
    inputs = docs(tmp_path, glosses, 12)
    out = place.path / "out"
    args = ["--model", model_dirs["text"], "--input", inputs, "--output", out]
    assert embed(*args, "--shard", "0/2").returncode == 0  # half done
    place.read_only(True)
    why = "Read-only file system" if place.root else "Permission denied"
    done = embed(*args)
    assert done.returncode == 2
    line = one_line(done)
    assert f"cannot write to {out}" in line and why in line
    done = embed(*args[:-1], place.path / "new")
    assert done.returncode == 2 and why in one_line(done)
    place.read_only(False)
    done = embed(*args)
    assert done.returncode == 0, done.stderr
    assert pq.read_table(out / "embeddings.parquet").column("id").to_pylist() == [str(i) for i in range(1, 13)]


def test_a_full_file_system_stops_the_job_with_one_line_and_it_resumes_when_space_is_back(tmp_path, model_dirs,
                                                                                          glosses, tmpfs):
    fs = tmpfs("40k")
    inputs = docs(tmp_path, glosses, 300)
    out = fs.path / "out"
    args = ["--model", model_dirs["text"], "--input", inputs, "--output", out, "--part-rows", "10"]
    done = embed(*args)
    assert done.returncode == 1
    line = one_line(done)
    assert "No space left on device" in line and "run the same command again" in line
    committed = [f for f in (out / "parts").glob("*.parquet")]
    assert committed and all(pq.read_table(f).num_rows == 10 for f in committed)  # what is there is whole

    fs.remount("size=16m")  # space is back
    done = embed(*args)
    assert done.returncode == 0, done.stderr
    assert f"skipped {10 * len(committed)} (done before)" in done.stderr
    table = pq.read_table(out / "embeddings.parquet")
    assert table.column("id").to_pylist() == [str(i) for i in range(1, 301)]  # each input exactly once
    reference = tmp_path / "reference"
    run_embed_job(EmbedJob(str(model_dirs["text"]), str(inputs), str(reference), progress=False,
                           engine={"threads": 1, "device": "cpu"}))
    np.testing.assert_allclose(embedding_matrix(table),
                               embedding_matrix(pq.read_table(reference / "embeddings.parquet")), atol=1e-5)
    assert not [p for p in out.rglob(".*") if p.name != ".merge.lock"]  # no temporaries left
