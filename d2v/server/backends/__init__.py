"""Inference backends behind one interface (`Backend`): PyTorch (`torch_backend`) and onnxruntime
(`onnx_backend`, torch-free). `load_backend` picks one for a model directory; each is imported lazily
so serving export directories never imports torch."""

from d2v.server.backends.base import (
    Backend,
    BackendError,
    Task,
    collate,
    load_backend,
    real_frames,
)

__all__ = ["Backend", "BackendError", "Task", "collate", "load_backend", "real_frames"]
