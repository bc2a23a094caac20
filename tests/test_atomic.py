import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from d2v import atomic
from d2v.atomic import (
    atomic_directory,
    atomic_file,
    atomic_write,
    clean_stale,
    recover_directory,
    replace_directory,
    temporary_name,
)


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    atomic_write(f, "one")
    atomic_write(f, b"two")
    assert f.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(f, "w") as out:
        out.write("half of the new")
        raise RuntimeError("killed")
    assert f.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_directory_is_swapped_whole(tmp_path: Path) -> None:
    d = tmp_path / "best"
    with atomic_directory(d) as tmp:
        (tmp / "x").write_text("1")
    with atomic_directory(d) as tmp:
        (tmp / "y").write_text("2")
        assert (d / "x").read_text() == "1"  # the old one is there until the new one is complete
    assert sorted(p.name for p in d.iterdir()) == ["y"]
    with pytest.raises(ValueError), atomic_directory(d) as tmp:
        (tmp / "z").write_text("3")
        raise ValueError("failed half-way")
    assert sorted(p.name for p in d.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_committed_files_get_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    """A writer that creates its file 0o600 (safetensors does) must not leave a checkpoint that other
    users of the directory (a container's server user, a shared volume) cannot read."""
    old = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "ckpt") as tmp:
            os.close(os.open(tmp / "weights", os.O_CREAT | os.O_WRONLY, 0o600))
            (tmp / "config.json").write_text("{}")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()}
    assert modes == {"weights": 0o640, "config.json": 0o640}


def test_fallback_swap_interrupted_is_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "best"
    d.mkdir()
    (d / "x").write_text("old")
    # a kill between the two renames of the non-Linux swap leaves only the old directory aside
    os.rename(d, temporary_name(d, "old"))
    assert not d.exists()
    assert clean_stale(tmp_path) == []
    assert (d / "x").read_text() == "old"
    # the fallback path itself replaces correctly
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    new = tmp_path / "new"
    new.mkdir()
    (new / "y").write_text("new")
    replace_directory(new, d)
    assert sorted(p.name for p in d.iterdir()) == ["y"]
    recover_directory(d)  # nothing to recover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_clean_stale_removes_only_dead_processes_temporaries(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          check=True, capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = atomic._host()
    stale_file = tmp_path / f".part-1.parquet.{host}-{dead_pid}-ab12{atomic.TMP_SUFFIX}"
    stale_dir = tmp_path / f".step-00000010.{host}-{dead_pid}-cd34{atomic.TMP_SUFFIX}"
    live = temporary_name(tmp_path / "part-2.parquet")  # this process: alive
    other_host = tmp_path / f".x.otherhost-{dead_pid}-ef56{atomic.TMP_SUFFIX}"
    stale_file.write_text("partial")
    stale_dir.mkdir()
    (stale_dir / "student.safetensors").write_bytes(b"\0" * 64)
    live.write_text("being written")
    other_host.write_text("someone else's")
    (tmp_path / "keep.txt").write_text("data")
    removed = clean_stale(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_dir])
    assert live.exists() and other_host.exists() and (tmp_path / "keep.txt").exists()


_WRITER = """
import sys
from d2v.atomic import atomic_write
path = sys.argv[1]
i = 0
while True:
    i += 1
    atomic_write(path, (str(i % 10) * 200_000))
"""


def test_sigkill_during_writes_never_leaves_a_torn_file(tmp_path: Path) -> None:
    f = tmp_path / "state.txt"
    atomic_write(f, "0" * 200_000)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for delay in (0.05, 0.11, 0.17, 0.23, 0.31):
        atomic_write(f, "0" * 200_000)
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(f)], env=env)
        while f.read_text()[0] == "0":  # the writer has started replacing the file
            assert proc.poll() is None, "the writer exited"
            time.sleep(0.01)
        time.sleep(delay)  # then killed at some point of its writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = f.read_text()
        assert len(data) == 200_000 and len(set(data)) == 1
    clean_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.txt"]
