"""The safetensors header reader: names, dtypes and shapes without the data, and a named error for
every way a file can be cut, padded or forged."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from d2v.model.safetensors_header import HeaderError, TensorInfo, read_header


@pytest.fixture
def file(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.float16), "c": torch.zeros(0),
               "d": torch.arange(3, dtype=torch.int64)}, str(f))
    return f


def _forge(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_reads_names_dtypes_and_shapes(file):
    assert read_header(file) == {"a": TensorInfo("float32", (2, 3)), "b": TensorInfo("float16", (4,)),
                                 "c": TensorInfo("float32", (0,)), "d": TensorInfo("int64", (3,))}


@pytest.mark.parametrize("cut, message", [
    (lambda b: b"", "shorter than a header"),
    (lambda b: b[:5], "shorter than a header"),
    (lambda b: b[:20], "the header claims"),
    (lambda b: b[:-1], "the file is truncated"),
    (lambda b: b + b"\0", "longer than its header says"),
    (lambda b: b[:8] + b"x" * (len(b) - 8), "not valid JSON"),
])
def test_damaged_files(file, cut, message):
    file.write_bytes(cut(file.read_bytes()))
    with pytest.raises(HeaderError, match=message):
        read_header(file)


@pytest.mark.parametrize("entry, message", [
    ({"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}, "unknown dtype"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "invalid shape"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "cannot hold"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, "invalid data offsets"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}, "gap or overlap"),
    ({"dtype": "F32", "shape": [10 ** 9, 10 ** 9], "data_offsets": [0, 4]}, "cannot hold"),
])
def test_forged_headers(tmp_path, entry, message):
    f = tmp_path / "f.safetensors"
    _forge(f, {"x": entry}, b"\0" * 6)
    with pytest.raises(HeaderError, match=message):
        read_header(f)
