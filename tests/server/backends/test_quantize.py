"""Reduced precision on CPU: `--quantize int8` (an int8 copy of an export in the cache directory, the
export untouched; torch's dynamic int8 linear layers for a checkpoint) and bf16 weights, each checked
against float32 at load on the check inputs and refused below `--min-cosine`."""

import hashlib

import numpy as np
import pytest
import torch
from test_backends import real_items

from d2v.server.backends import Task, load_backend
from d2v.server.backends.base import BackendError
from d2v.server.backends.fidelity import cosine


def tree_digest(path) -> dict[str, str]:
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


def close_to_fp32(reduced, fp32, items, tasks) -> float:
    return min(cosine(a, b) for a, b in zip(reduced.run(items, tasks), fp32.run(items, tasks), strict=True))


def test_int8_export_is_a_cached_copy_close_to_fp32(model_dirs, tmp_path):
    export = model_dirs["text-onnx"]
    before = tree_digest(export)
    b = load_backend(export, threads=1, quantize="int8", cache_dir=str(tmp_path))
    assert tree_digest(export) == before  # the user's export is never written
    (copy,) = (tmp_path / "int8").iterdir()
    assert copy.name.startswith(export.name) and b.model.path == copy
    sizes = {f.name: f.stat().st_size for f in copy.glob("*.onnx")}
    assert all(sizes[f.name] < f.stat().st_size for f in export.glob("*.onnx"))  # int8 weights are smaller
    assert b.device == "cpu (int8 dynamic)" and b.fidelity.min_cosine >= 0.99
    mtime = (copy / "config.json").stat().st_mtime_ns
    again = load_backend(export, threads=1, quantize="int8", cache_dir=str(tmp_path))
    assert again.model.path == copy and (copy / "config.json").stat().st_mtime_ns == mtime  # reused
    items = real_items("text", model_dirs["text"])
    tasks = [Task("embed", "mean"), Task("classify"), Task("embed", "cls")]
    out = b.run(items, tasks)
    assert all(o.dtype == np.float32 for o in out)
    assert close_to_fp32(b, load_backend(export, threads=1), items, tasks) > 0.99


def test_int8_checkpoint_quantizes_the_transformer_linears(model_dirs):
    b = load_backend(model_dirs["audio"], threads=1, quantize="int8")
    in_blocks = [m for n, m in b.model.named_modules() if ".blocks." in f".{n}."]
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in in_blocks)
    assert not any(type(m) is torch.nn.Linear for m in in_blocks)
    assert b.device == "cpu (int8 dynamic)" and b.fidelity.min_cosine >= 0.99
    items = real_items("audio", model_dirs["audio"])
    tasks = [Task("embed", "mean"), Task("classify"), Task("embed", "mean")]
    assert all(o.dtype == np.float32 for o in b.run(items, tasks))
    assert close_to_fp32(b, load_backend(model_dirs["audio"], threads=1), items, tasks) > 0.99


def test_bf16_on_cpu_answers_float32_close_to_fp32(model_dirs):
    b = load_backend(model_dirs["image"], threads=1, dtype="bfloat16")
    assert b.device == "cpu (bfloat16)" and b.model.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert b.fidelity.outputs == 12 and b.fidelity.min_cosine >= 0.99  # 4 inputs x (mean, cls, logits)
    items = real_items("image", model_dirs["image"])
    tasks = [Task("embed", "mean"), Task("classify"), Task("embed", "cls")]
    assert all(o.dtype == np.float32 for o in b.run(items, tasks))
    assert close_to_fp32(b, load_backend(model_dirs["image"], threads=1), items, tasks) > 0.99


@pytest.mark.parametrize("key, options", [("image", {"quantize": "int8"}), ("image-onnx", {"quantize": "int8"}),
                                          ("text", {"dtype": "bfloat16"})])
def test_reduced_precision_below_the_bound_is_refused(model_dirs, tmp_path, key, options):
    with pytest.raises(BackendError, match=r"is refused: its cosine to float32 .* is below --min-cosine 1"):
        load_backend(model_dirs[key], threads=1, min_cosine=1.0, cache_dir=str(tmp_path), **options)
    assert load_backend(model_dirs[key], threads=1, min_cosine=0, cache_dir=str(tmp_path), **options).fidelity is None


def test_int8_settings_that_cannot_work_are_refused(model_dirs):
    with pytest.raises(BackendError, match="--quantize int8 runs on CPU in float32"):
        load_backend(model_dirs["text"], threads=1, quantize="int8", dtype="bfloat16")
    with pytest.raises(BackendError, match="unknown quantization 'int4'"):
        load_backend(model_dirs["text"], quantize="int4")
