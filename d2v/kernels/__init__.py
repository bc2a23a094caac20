"""The one dispatch point for d2v's accelerated ops.

The model calls only the public ops below; each has exactly the signature of its PyTorch reference in
`reference.py`. `D2V_KERNELS` picks the implementation (read once, at import):

- `auto` (the default): the fused Triton kernels (`triton_attention.py`, `triton_conv_block.py`, the
  only modules that import triton) where they apply, once they have matched the reference: the first
  call of each op and dtype that would run a kernel runs both, compares them (`check.py`, the dtype's
  tolerance) and returns the reference's result; on a mismatch that op stays on the reference for the
  rest of the process, with a warning in the log (`status()` tells; the server shows it in /models
  and /metrics). In the server that first call is the loaded model's warm-up batch.
- `triton`: the kernels wherever they apply, unchecked (benchmarks, kernel work).
- `reference`: never the kernels. `D2V_DISABLE_TRITON=1`, the former switch, still means this
  (deprecated).

The kernels apply when all of these hold:

- `HAS_TRITON`: triton is installed and the mode is not `reference` (found without importing triton:
  importing d2v never touches triton or the GPU driver; the kernel modules are imported on the first
  CUDA call, and a failed import falls back to the reference);
- the tensors are on a CUDA device;
- nothing is being exported or traced: not under `torch.onnx.is_in_onnx_export()`,
  `torch.compiler.is_exporting()`, `torch.compiler.is_compiling()` (torch.compile/Inductor fuses the
  reference itself) or `torch.jit` tracing, and not inside `exportable()`;
- the op's arguments are ones the kernel handles and wins on: conv_block in fp32/fp16/bf16; attention
  in fp16/bf16 with head dim <= 128 and no dropout. Attention dropout in training runs the reference
  (the kernel has no dropout). fp32 attention runs the reference too: the kernel supports it exactly
  (tested), but its exact-fp32 FMA tiles are small (register-bound) and expected to lose to SDPA's
  memory-efficient fp32 kernel (not yet measured; bench/kernels.py on a GPU decides). Call
  `d2v.kernels.triton_attention.attention` directly to force it.

The reference runs everywhere else.
"""

import contextlib
import contextvars
import importlib
import importlib.util
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any, Literal

import torch
from torch import Tensor

from d2v.kernels import reference
from d2v.kernels.check import KernelCheck, check_kernel

__all__ = ["HAS_TRITON", "MODE", "OPS", "KernelMode", "attention", "conv_block", "exportable", "is_exportable",
           "kernel_mode", "status", "use_triton"]

KernelMode = Literal["auto", "triton", "reference"]
OPS = ("attention", "conv_block")
_MODES = ("auto", "triton", "reference")
_log = logging.getLogger("d2v.kernels")


def kernel_mode(environ: Mapping[str, str] | None = None) -> KernelMode:
    """The implementation `D2V_KERNELS` asks for: "auto" (unset), "triton" or "reference".

    `D2V_DISABLE_TRITON=1` (the former switch, deprecated) means "reference" when `D2V_KERNELS` is
    unset. An unknown value warns and gives "reference", the implementation that is always right.
    """
    env = os.environ if environ is None else environ
    value = env.get("D2V_KERNELS", "").strip().lower()
    if value in _MODES:
        return value  # type: ignore[return-value]
    if value:
        warnings.warn(f"D2V_KERNELS={value!r} is none of auto, triton, reference: using the reference",
                      RuntimeWarning, stacklevel=2)
        return "reference"
    if env.get("D2V_DISABLE_TRITON", "").strip().lower() in ("1", "true", "yes", "on"):
        warnings.warn("D2V_DISABLE_TRITON is deprecated: set D2V_KERNELS=reference instead", FutureWarning,
                      stacklevel=2)
        return "reference"
    return "auto"


def _has_triton(mode: KernelMode) -> bool:
    """Found, not imported: importing triton here would fix its interpreter mode (TRITON_INTERPRET is
    read when triton.language is first imported) and cost every CPU-only process a quarter second. The
    kernel modules import it on first use; if that import fails they are switched off then."""
    return mode != "reference" and importlib.util.find_spec("triton") is not None


MODE: KernelMode = kernel_mode()
"""What D2V_KERNELS asked for, read at import."""

HAS_TRITON: bool = _has_triton(MODE)
"""Whether the fused Triton kernels may run at all: triton is installed and the mode is not reference."""

_checks: dict[tuple[str, torch.dtype], KernelCheck] = {}
"""Each (op, dtype) checked so far in this process (mode "auto")."""
_check_lock = threading.Lock()

_EXPORTABLE: contextvars.ContextVar[bool] = contextvars.ContextVar("d2v_exportable", default=False)
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_ATTENTION_DTYPES = (torch.float16, torch.bfloat16)  # fp32 attention runs the reference (module docstring)


@contextlib.contextmanager
def exportable(enabled: bool = True) -> Iterator[None]:
    """Force the PyTorch reference path inside this block (for export and tracing), like timm's
    `set_layer_config(exportable=True)`."""
    token = _EXPORTABLE.set(enabled)
    try:
        yield
    finally:
        _EXPORTABLE.reset(token)


def is_exportable() -> bool:
    """True while the graph is being exported or traced, or inside `exportable()`."""
    if _EXPORTABLE.get():
        return True
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    return torch.compiler.is_exporting() or torch.compiler.is_compiling()


def _on_gpu(t: Tensor) -> bool:
    return t.is_cuda


def use_triton(*tensors: Tensor) -> bool:
    """Whether the Triton kernels would run for these tensors right now."""
    return (
        HAS_TRITON
        and all(_on_gpu(t) and t.dtype in _SUPPORTED_DTYPES and t.numel() > 0 for t in tensors)
        and not is_exportable()
    )


def _trusted(op: str, impl: Callable[..., Tensor], args: tuple[Any, ...]) -> bool:
    """Whether `impl` may answer this call. In mode "auto" the first call of each op and dtype is
    checked against the reference (and answered by the reference); an op that failed once stays on
    the reference."""
    if MODE == "triton":
        return True
    if any(not c.ok for (name, _), c in _checks.items() if name == op):
        return False
    key = (op, args[0].dtype)
    if key in _checks:
        return True
    with _check_lock:
        if key not in _checks:
            check = check_kernel(op, impl, args)
            _checks[key] = check
            if check.ok:
                _log.info("%s; using it", check)
            else:
                _log.warning("%s; falling back to the PyTorch reference for %s", check, op)
    return False


def status() -> dict[str, str]:
    """What each op runs on CUDA tensors: "triton", "reference", "triton (unchecked)" (mode auto, not
    called yet) or "reference (fallback: WHY)" after a failed check."""
    out = {}
    for op in OPS:
        failed = [c for (name, _), c in _checks.items() if name == op and not c.ok]
        if not HAS_TRITON:
            out[op] = "reference"
        elif MODE == "triton":
            out[op] = "triton"
        elif failed:
            out[op] = f"reference (fallback: {failed[0]})"
        elif any(name == op for name, _ in _checks):
            out[op] = "triton"
        else:
            out[op] = "triton (unchecked)"
    return out


_modules: dict[str, ModuleType | None] = {}


def _kernel_module(name: str) -> ModuleType | None:
    """Import a triton_* module on first use (None, with one warning, if triton fails to import)."""
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(f"d2v.kernels.{name}")
        except ImportError as e:
            warnings.warn(f"d2v.kernels: triton is installed but {name} failed to import ({e}); "
                          "using the PyTorch reference", RuntimeWarning, stacklevel=3)
            _modules[name] = None
    return _modules[name]


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None = None,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Scaled dot-product attention with a key padding mask and an additive bias.

    Args:
        q, k, v: (B, H, T, Dh).
        key_padding_mask: (B, T) bool, True at padded keys; those keys get no weight.
        bias: additive logits bias broadcastable to (B, H, T, T), e.g. ALiBi.
        dropout_p: attention dropout (applied only when > 0; then the reference runs).

    Returns:
        (B, H, T, Dh). Rows whose keys are all padding attend uniformly (finite, never NaN).
    """
    if (
        dropout_p == 0.0
        and q.shape[-1] <= 128
        and q.dtype in _ATTENTION_DTYPES
        and use_triton(q, k, v)
        and (module := _kernel_module("triton_attention")) is not None
        and _trusted("attention", module.attention, (q, k, v, key_padding_mask, bias))
    ):
        return module.attention(q, k, v, key_padding_mask, bias)
    return reference.attention(q, k, v, key_padding_mask, bias, dropout_p)


def conv_block(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding_mask: Tensor | None = None,
    groups: int = 1,
    residual: bool = False,
    eps: float = 1e-5,
) -> Tensor:
    """One conv-decoder layer: zero padding -> same-size conv -> LayerNorm over channels
    (no affine) -> GELU -> optional residual.

    Args:
        x: (B, C, T) for a 1-D weight (C_out, C/groups, K), or (B, C, H, W) for a 2-D weight.
        weight, bias: the convolution's parameters; "same" padding K//2, trimmed by one when K is even.
        padding_mask: (B, T) or (B, H, W) bool, True at padded positions (zeroed before the conv).
        groups: convolution groups.
        residual: add the (zeroed) input to the output; needs C_out == C.
        eps: LayerNorm epsilon.

    Returns:
        (B, C_out, T) or (B, C_out, H, W).
    """
    if (
        use_triton(x, weight)
        and (module := _kernel_module("triton_conv_block")) is not None
        and _trusted("conv_block", module.conv_block, (x, weight, bias, padding_mask, groups, residual, eps))
    ):
        return module.conv_block(x, weight, bias, padding_mask, groups, residual, eps)
    return reference.conv_block(x, weight, bias, padding_mask, groups, residual, eps)
