"""The backend interface: a loaded model that runs one padded batch.

A batch may mix tasks: each item asks for an embedding with some pooling, for logits, or (CTC
speech recognizers) for its per-frame emissions. Backends run the encoder once per batch and derive
every item's answer from the same token states.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from d2v.ctc import CTCVocabulary
from d2v.model.modality import HAS_CLS_TOKEN
from d2v.tokenizer.spec import PAD_ID

__all__ = ["Backend", "BackendError", "Task", "collate", "load_backend", "real_frames"]


class BackendError(RuntimeError):
    """A model directory cannot be served by the requested backend."""


@dataclass(frozen=True)
class Task:
    """What one item wants: "embed" with a pooling, "classify" (logits (C,)) or "transcribe" (CTC
    emissions (T, V) over the item's real frames only)."""

    kind: str
    pooling: str = "mean"


def real_frames(emissions: np.ndarray, frame_padding: np.ndarray | None) -> list[np.ndarray]:
    """(B, T, V) emissions and their (B, T) frame padding mask (True at padding) -> each item's
    emissions over its real frames, (T_i, V) float32."""
    if frame_padding is None:
        return [np.asarray(e, dtype=np.float32) for e in emissions]
    lengths = (~np.asarray(frame_padding, dtype=bool)).sum(axis=1)
    return [np.asarray(e[:n], dtype=np.float32) for e, n in zip(emissions, lengths, strict=True)]


def collate(modality: str, items: list[np.ndarray], pad_id: int = PAD_ID) -> tuple[np.ndarray, np.ndarray | None]:
    """Items -> a padded batch and its padding mask (True at padding; None for images).

    images (C, H, W) -> (B, C, H, W); audio (L,) -> (B, L) zero-padded; text (T,) -> (B, T) pad_id-padded."""
    if modality == "image":
        return np.stack(items), None
    n = max(len(x) for x in items)
    fill = 0 if modality == "audio" else pad_id
    x = np.full((len(items), n), fill, dtype=items[0].dtype)
    mask = np.ones((len(items), n), dtype=bool)
    for i, row in enumerate(items):
        x[i, : len(row)] = row
        mask[i, : len(row)] = False
    return x, mask


class Backend(ABC):
    """A model ready to run batches. Attributes describe it for /models and for request checks."""

    name: str
    modality: str
    config: dict[str, Any]
    """The directory's config.json contents."""
    directory: Path
    backend: str
    device: str
    dim: int
    labels: list[str] | None
    """Class names of a classification head (None without one, and for CTC heads)."""
    vocabulary: CTCVocabulary | None
    """The output symbols of a CTC head (speech recognizers); None for other models."""
    default_pooling: str
    has_cls: bool
    pad_id: int

    def _describe(self, name: str, directory: Path, config: dict[str, Any]) -> None:
        self.name, self.directory, self.config = name, directory, config
        self.modality = config["modality"]
        self.dim = int(config["encoder"]["embed_dim"])
        head = config.get("head")
        # a CTC head's labels are its vocabulary, not classes: such a model does not /classify
        self.labels = list(head["labels"]) if head and head.get("type") != "ctc" else None
        self.vocabulary = CTCVocabulary.from_head(head) if head and head.get("type") == "ctc" else None
        self.default_pooling = head.get("pooling", "mean") if head else "mean"
        self.has_cls = HAS_CLS_TOKEN[self.modality]
        self.pad_id = int((config.get("preprocessing") or {}).get("pad_id", PAD_ID))

    @property
    def tasks(self) -> list[str]:
        """What the model answers: "embed" always, then "classify" or "transcribe" by its head."""
        return ["embed"] + (["classify"] if self.labels else []) + (["transcribe"] if self.vocabulary else [])

    @property
    def created(self) -> int:
        """When the model directory was written (its config.json's modification time, Unix seconds)."""
        try:
            return int((self.directory / "config.json").stat().st_mtime)
        except OSError:
            return 0

    @abstractmethod
    def run(self, items: list[np.ndarray], tasks: list[Task]) -> list[np.ndarray]:
        """One padded forward pass: per item, its pooled embedding (D,), logits (C,) or emissions
        (T_i, V) over its real frames, float32."""

    threads: int = 0
    """The intra-op threads a forward pass uses when it runs alone (0: the library's own choice)."""

    def auto_lanes(self) -> int:
        """How many forward passes of this model run at once when `--lanes` is 0 (auto): 1 here."""
        return 1

    def use_threads(self, n: int) -> None:
        """Run this thread's next forward passes on `n` intra-op threads (where the backend can; a
        no-op here)."""

    def kernels(self) -> dict[str, str] | None:
        """What d2v.kernels' ops run on for this model (PyTorch backends); None where they do not apply."""
        return None

    def info(self) -> dict[str, Any]:
        """The model as /models shows it: its directory's name, never the server path."""
        return {"name": self.name, "modality": self.modality, "dimensions": self.dim, "labels": self.labels,
                "pooling": self.default_pooling, "backend": self.backend, "device": self.device,
                "path": self.directory.name, "kernels": self.kernels(), "tasks": self.tasks}


def load_backend(path: str | Path, name: str | None = None, backend: str = "auto", device: str = "auto",
                 dtype: str = "auto", threads: int = 0, quantize: str = "none", min_cosine: float = 0.99,
                 cache_dir: str | None = None) -> Backend:
    """A checkpoint directory -> the PyTorch backend; an export directory (config.json with an "onnx"
    section) -> the onnxruntime backend.

    Args:
        quantize: "int8": dynamic int8 linear layers on CPU (`quantize.py`); "none": as stored.
        min_cosine: reduced precision on CPU (int8, or a bf16/fp16 `dtype`) is refused when an output on
            the check inputs has cosine below this to float32 (`fidelity.py`; 0: no check).
        cache_dir: where the int8 copy of an export is kept (`quantize.py: cache_root`).
    """
    if quantize not in ("none", "int8"):
        raise BackendError(f"unknown quantization {quantize!r}: use none or int8")
    path = Path(path)
    file = path / "config.json"
    if not file.is_file():
        raise BackendError(f"{path} is not a d2v checkpoint or export directory: config.json is missing")
    from d2v.model.checkpoint_config import CheckpointConfig, CheckpointError, load_config_file  # torch-free

    try:  # the validation every command applies to a checkpoint's config (file and field named)
        config = load_config_file(file)
        CheckpointConfig.from_dict(config, str(file))
    except CheckpointError as e:
        raise BackendError(str(e)) from None
    is_export = isinstance(config.get("onnx"), dict)
    kind = backend if backend != "auto" else ("onnx" if is_export else "torch")
    name = name or config.get("name") or path.name
    if kind == "onnx":
        if not is_export:
            raise BackendError(f"{path} is a checkpoint: export it with `d2v export` to serve it with onnxruntime")
        from d2v.server.backends.onnx_backend import OnnxBackend

        return OnnxBackend(path, name, config, device=device, threads=threads, quantize=quantize,
                           min_cosine=min_cosine, cache_dir=cache_dir)
    if is_export:
        raise BackendError(f"{path} is an ONNX export: serve it with --backend onnx (or auto)")
    from d2v.server.backends.torch_backend import TorchBackend

    return TorchBackend(path, name, config, device=device, dtype=dtype, threads=threads, quantize=quantize,
                        min_cosine=min_cosine)
