"""The fused Triton conv-decoder block against the PyTorch reference, under TRITON_INTERPRET=1 on CPU.

Covers both inner paths (tensor-core implicit GEMM when a group has >= 16 channels each way, FMA for
depthwise and narrow groups), 1-D kernels 7 and 9 and an even one, 3x3 on a patch grid, a channel
change (no residual), missing bias, padded positions and a sample that is all padding, batch of one.
"""

import os

import pytest
import torch

pytest.importorskip("triton")
assert os.environ.get("TRITON_INTERPRET") == "1", "tests/kernels/conftest.py sets TRITON_INTERPRET=1"

from d2v.kernels import reference
from d2v.kernels import triton_conv_block as tc

TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (6e-3, 6e-3)}

# (name, B, C_in, C_out, spatial, K, groups, residual, masked, bias)
CASES = [
    ("audio-k7-gemm", 2, 32, 32, (37,), 7, 2, True, True, True),
    ("text-k9-dense", 2, 16, 16, (23,), 9, 1, False, True, True),
    ("depthwise-k9-batch1", 1, 24, 24, (29,), 9, 24, True, True, True),
    ("even-k4-widen-nobias", 2, 8, 16, (20,), 4, 1, False, True, False),
    ("image-3x3-gemm", 2, 32, 32, (5, 7), 3, 2, True, True, True),
    ("image-3x3-fma-nomask", 1, 16, 16, (4, 6), 3, 8, True, False, True),
    ("wide-group-k3", 2, 64, 64, (9,), 3, 1, True, True, True),  # 64 ch/group: dw tiles narrower than fwd
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_conv_block_matches_reference(case, dtype):
    _, B, C, C_out, spatial, K, groups, residual, masked, has_bias = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, *spatial, generator=g).to(dtype).requires_grad_()
    fan_in = C // groups * K ** len(spatial)
    w = (torch.randn(C_out, C // groups, *([K] * len(spatial)), generator=g) / fan_in**0.5).to(dtype)
    w.requires_grad_()
    b = (0.1 * torch.randn(C_out, generator=g)).to(dtype).requires_grad_() if has_bias else None
    pad = None
    if masked:
        pad = torch.rand(B, *spatial, generator=g) < 0.3
        if B > 1:
            pad[-1] = True  # a sample that is all padding
    leaves = [x, w] + ([b] if b is not None else [])
    dout = torch.randn(B, C_out, *spatial, generator=g).to(dtype)

    out = tc.conv_block(x, w, b, pad, groups, residual)
    grads = torch.autograd.grad(out, leaves, dout)

    ref_leaves = [t.detach().float().requires_grad_() for t in leaves]
    ref = reference.conv_block(ref_leaves[0], ref_leaves[1], ref_leaves[2] if b is not None else None, pad,
                               groups, residual)
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout.float())

    assert out.shape == (B, C_out, *spatial) and out.dtype == dtype
    atol, rtol = TOL[dtype]
    for name, got, want in zip(["out", "dx", "dw", "db"], (out, *grads), (ref, *ref_grads)):
        scale = want.abs().max().clamp(min=1.0).item()
        torch.testing.assert_close(got.float(), want, atol=atol * scale, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}")
    if masked:  # padding never leaks: padded inputs get no gradient
        assert (grads[0].movedim(1, -1)[pad] == 0).all()


def test_padding_does_not_leak_into_real_positions():
    """Changing the values at padded positions changes no real output (the decoder contract)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 32, 19, generator=g)
    w = torch.randn(32, 16, 7, generator=g) / 10
    pad = torch.zeros(2, 19, dtype=torch.bool)
    pad[0, 12:] = True
    noisy = x.clone()
    noisy[0, :, 12:] = 1e3
    a = tc.conv_block(x, w, None, pad, groups=2, residual=True)
    b = tc.conv_block(noisy, w, None, pad, groups=2, residual=True)
    torch.testing.assert_close(a[0, :, :12], b[0, :, :12], atol=0, rtol=0)


def test_weight_cast_follows_input_dtype():
    """fp32 parameters with fp16 activations (as without autocast) compute in fp16, grads in fp32."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 16, 11, generator=g).half()
    w = (torch.randn(16, 16, 9, generator=g) / 12).requires_grad_()
    b = torch.zeros(16, requires_grad=True)
    out = tc.conv_block(x, w, b)
    out.float().sum().backward()
    assert out.dtype == torch.float16 and w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), reference.conv_block(x.float(), w.half().float(), b), atol=6e-3,
                               rtol=6e-3)
