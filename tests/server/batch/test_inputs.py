"""Reading an input file (regular files only, within a size limit) and fingerprints of inputs."""

import os
from pathlib import Path

import pytest

from d2v.server.batch.inputs import input_fingerprint, read_file
from d2v.server.batch.sources import Source
from d2v.server.decode import InputError, InputTooLarge


def test_regular_files_are_read_within_the_limit(tmp_path):
    f = tmp_path / "doc.txt"
    f.write_bytes(b"x" * 100)
    data, st = read_file(f, 100)
    assert data == b"x" * 100 and st.st_size == 100
    with pytest.raises(InputTooLarge, match="file of 100 bytes exceeds the limit of 99 bytes"):
        read_file(f, 99)


def test_anything_else_fails_at_once(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # no writer: a plain open() would wait for one forever
    with pytest.raises(InputError, match=r"^not a regular file \(a FIFO\)$"):
        read_file(tmp_path / "pipe", 1000)
    with pytest.raises(InputError, match=r"not a regular file \(a directory\)"):
        read_file(tmp_path, 1000)
    with pytest.raises(InputError, match=r"not a regular file \(a character device\)"):
        read_file(Path("/dev/zero"), 1000)  # endless: would fill the memory
    with pytest.raises(InputError, match="cannot read .*missing.png: No such file"):
        read_file(tmp_path / "missing.png", 1000)


def test_fingerprints_change_with_the_input(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"12345")
    src = Source("a", "a.png", path=f)
    first = input_fingerprint(src)
    assert first == f"file:5:{f.stat().st_mtime_ns}" and input_fingerprint(src) == first
    os.utime(f, ns=(0, f.stat().st_mtime_ns + 1_000_000))
    assert input_fingerprint(src) != first  # touched: same size, other time
    f.unlink()
    assert input_fingerprint(src) == "missing:ENOENT"

    text = input_fingerprint(Source("1", "d.txt:1", text="a document"))
    assert text.startswith("text:") and text == input_fingerprint(Source("9", "other", text="a document"))
    assert text != input_fingerprint(Source("1", "d.txt:1", text="another document"))
    assert input_fingerprint(Source("1", "d.txt:1", text="\ud800 lone surrogate")).startswith("text:")
    assert input_fingerprint(Source("line 2", "m.jsonl:2", error="not JSON")).startswith("invalid:")

    ids = input_fingerprint(Source("1", "m.jsonl:1", tokens=(0, 17, 42, 2)))
    assert ids.startswith("tokens:") and ids == input_fingerprint(Source("7", "other", tokens=(0, 17, 42, 2)))
    for other in [(0, 17, 43, 2), (0, 174, 2, 2), (0, 17, 42), (0, 1, 742, 2)]:  # the ids themselves, not their digits
        assert input_fingerprint(Source("1", "m.jsonl:1", tokens=other)) != ids
    assert ids != input_fingerprint(Source("1", "m.jsonl:1", text="0 17 42 2"))  # not the text of the same digits
