"""Read a safetensors file's header (tensor names, dtypes, shapes) without reading the data, and
check that the file is whole: the header is valid JSON, every tensor's byte range fits its dtype
and shape, the ranges tile the data section, and the file is exactly as long as the header says.

Loading checks a checkpoint against its config with this before any model is allocated, so a
config that claims a huge model, or a truncated file, fails in milliseconds with a named error.
Torch-free.
"""

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DTYPE_BYTES", "DTYPE_NAMES", "FLOAT_STORAGE", "HeaderError", "TensorInfo", "read_header"]

FLOAT_STORAGE = ("float16", "bfloat16", "float32")
"""The dtypes a floating-point weight may be stored in (it is cast to the model's dtype on load); the
names of `d2v.model.checkpoint.FLOAT_DTYPES`, here without torch for the command line."""

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit of the safetensors library itself

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
"""Bytes per element of each safetensors dtype."""
DTYPE_NAMES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
               "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32",
               "U32": "uint32", "F32": "float32", "I64": "int64", "U64": "uint64", "F64": "float64"}
"""The torch name of each safetensors dtype (`torch.<name>`)."""


class HeaderError(ValueError):
    """The file is not a whole safetensors file; the message says what is wrong (not which file)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it."""

    dtype: str
    """The torch dtype name, e.g. "float16"."""
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_header(file: str | Path) -> dict[str, TensorInfo]:
    """The tensors of a safetensors file, in the header's order (the data is not read).

    Raises:
        HeaderError: the file is too short, its header is not valid, or its size does not match.
        OSError: the file cannot be opened.
    """
    file = Path(file)
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HeaderError(f"the file is {size} bytes long, shorter than a header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise HeaderError(f"the header claims {n} bytes, the file holds {size - 8} after its length")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HeaderError(f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise HeaderError("the header is not a JSON object")
    tensors: dict[str, TensorInfo] = {}
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise HeaderError(f"the entry of {name!r} is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_BYTES:
            raise HeaderError(f"{name} has an unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise HeaderError(f"{name} has an invalid shape {shape!r:.80}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise HeaderError(f"{name} has invalid data offsets {offsets!r:.80}")
        info = TensorInfo(DTYPE_NAMES[dtype], tuple(shape))
        if offsets[1] - offsets[0] != info.numel * DTYPE_BYTES[dtype]:
            raise HeaderError(f"{name}: {offsets[1] - offsets[0]} bytes cannot hold a {dtype} tensor of shape "
                              f"{tuple(shape)}")
        tensors[name] = info
        ranges.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(ranges):
        if begin != end:
            raise HeaderError(f"the data of {name} starts at byte {begin}, expected {end} (gap or overlap)")
        end = stop
    data = size - 8 - n
    if end != data:
        what = "truncated" if end > data else "longer than its header says"
        raise HeaderError(f"the file is {what}: the header describes {end} bytes of data, the file holds {data}")
    return tensors
