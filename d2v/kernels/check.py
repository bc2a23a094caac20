"""Checks a fused kernel against the PyTorch reference on real inputs, before it is trusted.

The dispatch in `d2v.kernels` runs `check_kernel` on the first call of each op (and dtype) that would
take a Triton kernel: in the server that is the loaded model's warm-up batch. The kernel and the
reference run on the same inputs; the reference in float32 on the inputs rounded to the kernel's
dtype (what the kernel itself sees), so the difference measures the kernel, not the dtype. A kernel
whose output is not finite, or differs by more than the dtype's tolerance, is not used.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from d2v.kernels import reference

__all__ = ["TOLERANCES", "KernelCheck", "check_kernel"]

TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (6e-3, 6e-3),
    torch.bfloat16: (5e-2, 5e-2),
}
"""(atol, rtol) per dtype; atol is scaled by the reference's largest magnitude (at least 1). fp32 and
fp16 are the kernel tests' bounds with headroom for longer sums on GPUs; bf16 keeps 8 bits of
mantissa (3 fewer than fp16), so 8x fp16's."""


@dataclass(frozen=True)
class KernelCheck:
    """The outcome of one comparison.

    Attributes:
        op: "attention" or "conv_block".
        dtype: the dtype the kernel ran in.
        ok: the kernel's output is finite and within the tolerance.
        max_error: the largest |kernel - reference| over the compared positions (inf if not finite).
        tolerance: the largest difference allowed at that position, where the error is largest.
    """

    op: str
    dtype: torch.dtype
    ok: bool
    max_error: float
    tolerance: float

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        verdict = "matches" if self.ok else "differs from"
        return (f"the Triton {self.op} kernel {verdict} the reference in {dtype}: largest difference "
                f"{self.max_error:.3g}, tolerance {self.tolerance:.3g}")


def _valid_positions(op: str, args: Sequence[Any], out: Tensor) -> Tensor | None:
    """Where outputs are compared: padded positions are ignored (callers ignore them too)."""
    if op == "attention":
        q, k, pad = args[0], args[1], args[3] if len(args) > 3 else None
        if pad is None or q.shape[-2] != k.shape[-2]:
            return None
        return ~pad[:, None, :, None].expand_as(out)  # (B, 1, T, 1): padded query rows
    pad = args[3] if len(args) > 3 else None
    return None if pad is None else ~pad.unsqueeze(1).expand_as(out)  # (B, 1, T) or (B, 1, H, W)


def check_kernel(op: str, impl: Callable[..., Tensor], args: Sequence[Any]) -> KernelCheck:
    """Run `impl(*args)` and the reference op on the same arguments and compare them.

    Args:
        op: the name of the op in `d2v.kernels.reference` ("attention" or "conv_block").
        impl: the implementation under test, with the reference's signature (its first arguments).
        args: the arguments of one real call, as the dispatch received them.

    Returns:
        The comparison; `ok` is False if the kernel raises, returns non-finite values, a wrong shape,
        or differs by more than `TOLERANCES[dtype]`.
    """
    first = args[0]
    dev = first.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else first.dtype
    atol, rtol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    with torch.no_grad():
        try:
            got = impl(*args)
        except Exception:  # noqa: BLE001 - a kernel that fails is a kernel that does not match
            return KernelCheck(op, dtype, False, float("inf"), atol)
        upcast = [a.detach().to(dtype).float() if isinstance(a, Tensor) and a.is_floating_point() else a
                  for a in args]
        with torch.autocast(dev, enabled=False):
            want = getattr(reference, op)(*upcast)
    if got.shape != want.shape:
        return KernelCheck(op, dtype, False, float("inf"), atol)
    got = got.float()
    scale = max(float(want.abs().max()) if want.numel() else 0.0, 1.0)
    error = (got - want).abs()
    bound = atol * scale + rtol * want.abs()
    valid = _valid_positions(op, args, want)
    if valid is not None:
        error, bound, got = error[valid], bound[valid], got[valid]
    if not bool(torch.isfinite(got).all()):
        return KernelCheck(op, dtype, False, float("inf"), atol * scale)
    if not error.numel():
        return KernelCheck(op, dtype, True, 0.0, atol * scale)
    worst = int(torch.argmax(error - bound))
    excess = float((error - bound).flatten()[worst])
    return KernelCheck(op, dtype, excess <= 0, float(error.max()), float(bound.flatten()[worst]))
