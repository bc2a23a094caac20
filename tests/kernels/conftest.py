"""Kernel tests run Triton kernels on CPU tensors through the interpreter.

`TRITON_INTERPRET` is read when `@triton.jit` decorates a function, so it is set here, before any test
module of this folder imports `d2v.kernels.triton_*` (`d2v.kernels` itself imports none of them).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9's default, stated to silence its warning
