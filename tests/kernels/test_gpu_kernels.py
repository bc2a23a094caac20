"""The Triton kernels compiled for a real GPU against the PyTorch reference, on the models' real shapes,
in fp32, fp16 and bf16, forward and backward; and the dispatch's first-call check trusting them.

Marked `gpu`: skipped without CUDA, and deselected by default. The kernel tests of this folder run the
same kernels on CPU through the Triton interpreter; this file needs them compiled, so it runs with
`TRITON_INTERPRET=0` in a process of its own (`bench/gpu_check.sh` does both).
"""

import os

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="the interpreter is on: run with TRITON_INTERPRET=0 (bench/gpu_check.sh)"),
]

triton = pytest.importorskip("triton")

from d2v.kernels import reference
from d2v.kernels.check import TOLERANCES

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]

# (name, B, H, T, Dh, padded, alibi): base-size models' attention as they serve and train
ATTENTION = [
    ("image-vitb-197", 8, 12, 197, 64, False, False),
    ("audio-base-500-alibi", 4, 12, 500, 64, True, True),
    ("audio-1500-alibi", 2, 12, 1500, 64, True, True),
    ("text-base-128", 16, 12, 128, 64, True, False),
    ("text-base-512", 4, 12, 512, 64, True, False),
    ("large-dh64-16heads", 2, 16, 333, 64, True, False),
    ("dh128", 2, 8, 257, 128, True, False),
]

# (name, B, C, spatial, K, groups, residual, padded): the base presets' decoder layers
CONV = [
    ("image-base-768-3x3-g16", 8, 768, (14, 14), 3, 16, True, False),
    ("audio-base-384-k7-g16", 4, 384, (500,), 7, 16, True, True),
    ("text-base-768-k9-dense", 4, 768, (512,), 9, 1, False, True),
    ("image-large-1024-5x5-g16", 4, 1024, (14, 14), 5, 16, True, False),
]


def close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """`out` within the dtype's tolerance of `ref` (atol scaled by the reference's magnitude), finite."""
    atol, rtol = TOLERANCES[dtype]
    out, ref = out.detach(), ref.detach().float()
    scale = max(float(ref.abs().max()), 1.0)
    assert torch.isfinite(out).all(), f"{what}: non-finite values"
    err = (out.float() - ref).abs()
    bound = atol * scale + rtol * ref.abs()
    worst = float((err - bound).max())
    assert worst <= 0, f"{what}: max error {float(err.max()):.3g} beyond tolerance (atol {atol} x {scale:.3g})"


def lengths_mask(B: int, T: int, g: torch.Generator) -> torch.Tensor:
    """(B, T) True at padding: varied lengths, the first row full (a padded batch as the server makes)."""
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    return (torch.arange(T)[None, :] >= lengths[:, None]).cuda()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", ATTENTION, ids=[c[0] for c in ATTENTION])
def test_attention_on_the_gpu_matches_the_reference(case, dtype):
    from d2v.kernels import triton_attention as ta

    _, B, H, T, D, padded, alibi = case
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, T, D, generator=g).cuda().to(dtype) for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    pad = lengths_mask(B, T, g) if padded else None
    scale = None
    if alibi:
        scale = (torch.rand(H, generator=g) + 0.5).cuda().requires_grad_()
        dist = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs().float().cuda()

    def bias(s):
        return None if s is None else -dist[None, None] * (0.1 * s)[None, :, None, None]  # (1, H, T, T)

    leaves = [q, k, v] + ([scale] if scale is not None else [])
    out = ta.attention(q, k, v, pad, bias(scale))
    grads = torch.autograd.grad(out, leaves, dout)

    ref_leaves = [t.detach().float().requires_grad_() for t in leaves]
    ref_scale = ref_leaves[3] if scale is not None else None
    ref = reference.attention(*ref_leaves[:3], pad, bias(ref_scale))
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout.float())

    close(out, ref, dtype, "output")  # every row has real keys (row 0 is full, the rest at least T/2)
    for name, a, b in zip(["dq", "dk", "dv", "dscale"], grads, ref_grads, strict=False):
        if name in ("dk", "dv") and pad is not None:  # padded keys get no gradient in either
            keep = ~pad[:, None, :, None]
            a, b = a * keep, b * keep
        close(a, b, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CONV, ids=[c[0] for c in CONV])
def test_conv_block_on_the_gpu_matches_the_reference(case, dtype):
    from d2v.kernels import triton_conv_block as tc

    _, B, C, spatial, K, groups, residual, padded = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, *spatial, generator=g).cuda().to(dtype).requires_grad_()
    fan_in = C // groups * K ** len(spatial)
    w = (torch.randn(C, C // groups, *([K] * len(spatial)), generator=g) / fan_in**0.5).cuda().to(dtype)
    w.requires_grad_()
    b = (0.1 * torch.randn(C, generator=g)).cuda().to(dtype).requires_grad_()
    pad = (torch.rand(B, *spatial, generator=g) < 0.2).cuda() if padded else None
    dout = torch.randn(B, C, *spatial, generator=g).cuda().to(dtype)

    out = tc.conv_block(x, w, b, pad, groups, residual)
    grads = torch.autograd.grad(out, [x, w, b], dout)
    ref_leaves = [t.detach().float().requires_grad_() for t in (x, w, b)]
    ref = reference.conv_block(*ref_leaves, pad, groups, residual)
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout.float())

    close(out, ref, dtype, "output")
    for name, a, r in zip(["dx", "dweight", "dbias"], grads, ref_grads, strict=True):
        close(a, r, dtype, name)


def test_the_dispatch_trusts_the_kernels_after_its_first_call_check():
    """In auto mode the first CUDA call of each op checks the kernel against the reference; on this GPU
    both kernels must pass that check (a fallback here is a kernel bug on this hardware)."""
    from d2v import kernels

    if kernels.MODE != "auto" or not kernels.HAS_TRITON:
        pytest.skip(f"D2V_KERNELS={kernels.MODE}, triton available: {kernels.HAS_TRITON}")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 12, 197, 64, generator=g).cuda().to(torch.bfloat16) for _ in range(3))
    kernels.attention(q, k, v, lengths_mask(2, 197, g), None)
    x = torch.randn(2, 384, 100, generator=g).cuda().to(torch.bfloat16)
    w = (0.05 * torch.randn(384, 24, 7, generator=g)).cuda().to(torch.bfloat16)
    kernels.conv_block(x, w, None, None, 16, True)
    status = kernels.status()
    assert status == {"attention": "triton", "conv_block": "triton"}, status
