"""ONNX export: checkpoint directory -> export directory verified with onnxruntime.

`runtime` loads an export without torch; the exporter (`onnx_export`) needs torch and is imported
lazily, so `import d2v.export.runtime` stays torch-free.
"""

from typing import Any

__all__ = ["OPSET", "ExportError", "ExportOptions", "OnnxModel", "export_checkpoint"]

OPSET = 18
"""The ONNX opset of exported graphs: MatMul/Softmax attention that both the CPU and CUDA providers run."""


def __getattr__(name: str) -> Any:
    if name in ("ExportError", "ExportOptions", "export_checkpoint"):
        from d2v.export import onnx_export

        return getattr(onnx_export, name)
    if name == "OnnxModel":
        from d2v.export.runtime import OnnxModel

        return OnnxModel
    raise AttributeError(name)
