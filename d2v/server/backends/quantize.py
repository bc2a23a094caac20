"""Dynamic int8 quantization of a served model's linear layers (`--quantize int8`, CPU only).

Weights of every MatMul/Gemm (exports) or `nn.Linear` (checkpoints) are stored as int8 with a scale;
activations are quantized on the fly per batch. Everything else (convolutions, norms, attention's
softmax) stays float32, and outputs are float32.

- An export directory is never modified: its int8 copy (config.json and every graph, quantized by
  onnxruntime's `quantize_dynamic`) is written once to `<cache>/int8/<name>-<digest>/`, the digest
  being a SHA-256 of the export's config.json and graph files, so a changed export gets a new copy.
  `<cache>` is `--cache-dir`, else `$D2V_CACHE_DIR`, else `$XDG_CACHE_HOME/d2v`, else `~/.cache/d2v`.
- A checkpoint is quantized in memory with `torch.ao.quantization.quantize_dynamic` (deprecated in
  PyTorch 2.13 in favour of torchao, still working; its warnings are silenced here); the linear layers
  of the local encoders stay float32.
"""

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from d2v.atomic import atomic_directory

__all__ = ["cache_root", "export_digest", "quantize_torch_linear", "quantized_export"]


def cache_root(cache_dir: str | None = None) -> Path:
    """Where d2v keeps derived files: `cache_dir`, $D2V_CACHE_DIR, $XDG_CACHE_HOME/d2v or ~/.cache/d2v."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("D2V_CACHE_DIR"):
        return Path(os.environ["D2V_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "d2v"


def export_digest(path: Path, config: dict[str, Any]) -> str:
    """SHA-256 (hex, first 16 digits) of an export's config.json and graph files."""
    h = hashlib.sha256((path / "config.json").read_bytes())
    for graph in sorted(config["onnx"]["graphs"].values(), key=lambda g: g["file"]):
        with open(path / graph["file"], "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


def quantized_export(path: Path, config: dict[str, Any], cache_dir: str | None = None) -> Path:
    """The int8 copy of an export directory (made on first use, then reused)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dest = cache_root(cache_dir) / "int8" / f"{path.name}-{export_digest(path, config)}"
    if (dest / "config.json").is_file():
        return dest
    with atomic_directory(dest) as tmp:
        shutil.copy2(path / "config.json", tmp / "config.json")
        for graph in config["onnx"]["graphs"].values():
            quantize_dynamic(path / graph["file"], tmp / graph["file"], op_types_to_quantize=["MatMul", "Gemm"],
                             weight_type=QuantType.QInt8)
    return dest


def quantize_torch_linear(model: Any) -> Any:
    """A copy of a float32 encoder with its `nn.Linear` layers replaced by dynamic int8 ones (CPU):
    every one but those of the modality's local encoder (the audio feature projection, whose weight
    dtype sets the input's), which stay float32."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".local_encoder." not in n}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager-mode API's deprecation notices, once per layer
        return quantize_dynamic(model, names, dtype=torch.qint8)
