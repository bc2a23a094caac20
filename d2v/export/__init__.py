"""ONNX export: checkpoint directory -> export directory verified with onnxruntime.

`runtime` loads an export without torch; the exporter (`onnx_export`) needs torch and is imported
lazily, so `import d2v.export.runtime` stays torch-free.
"""

from d2v.lazy import lazy_exports

__all__ = ["OPSET", "ExportError", "ExportOptions", "OnnxModel", "export_checkpoint"]

OPSET = 18
"""The ONNX opset of exported graphs: MatMul/Softmax attention that both the CPU and CUDA providers run."""


__getattr__, __dir__ = lazy_exports(__name__, {"d2v.export.onnx_export": ("ExportError", "ExportOptions", "export_checkpoint"),
                                               "d2v.export.runtime": ("OnnxModel",)})
