"""The one dispatch point for d2v's accelerated ops.

The model calls only the public ops below. Each has exactly the signature of its PyTorch reference
in `reference.py`. Fused Triton kernels plug in here (and only here): they run on CUDA tensors when
triton imports and `D2V_DISABLE_TRITON` is unset, never under ONNX export, and the reference runs
everywhere else.
"""

from d2v.kernels.reference import attention, conv_block

__all__ = ["attention", "conv_block"]
