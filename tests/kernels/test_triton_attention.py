"""The Triton attention kernels against the PyTorch reference, under TRITON_INTERPRET=1 on CPU.

The launchers are called directly (the dispatcher sends CPU tensors to the reference). Shapes are small
but awkward: batch of one, a single token, lengths that no block size divides, left and right padding,
rows whose keys are all padding, cross attention, head dims that are not powers of two, and biases of
every broadcast shape, including ALiBi with a learned per-head scale whose gradient must come back.
"""

import os

import pytest
import torch

pytest.importorskip("triton")
assert os.environ.get("TRITON_INTERPRET") == "1", "tests/kernels/conftest.py sets TRITON_INTERPRET=1"

from d2v.kernels import reference
from d2v.kernels import triton_attention as ta

# Per dtype: (atol, rtol) against the fp32 reference run on the same (rounded) inputs. bf16 is left
# out: the Triton interpreter's bf16 dot is wrong (docs/kernels.md); it is covered on GPUs by bench/kernels.py.
TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (6e-3, 6e-3)}

# (name, B, H, T_Q, T_K, Dh, padding, bias)
CASES = [
    ("one-token", 1, 1, 1, 1, 32, None, None),
    ("batch1-odd", 1, 2, 37, 37, 32, "right", None),
    ("alibi-fully-padded-row", 3, 2, 37, 37, 32, "right+full", "alibi"),
    ("left-pad-full-bias", 2, 2, 45, 45, 64, "left", "full"),
    ("dh48-key-bias", 2, 1, 70, 70, 48, "right", "key"),
    ("dh128-alibi", 1, 2, 20, 20, 128, "right", "alibi"),
    ("cross-head-bias", 2, 3, 19, 33, 32, "right+full", "head"),
]


def make_padding(kind: str | None, B: int, T: int, g: torch.Generator) -> torch.Tensor | None:
    """(B, T) bool, True at padding: varied lengths, the first row unpadded, optionally the last row
    all padding, optionally flipped to left padding."""
    if kind is None:
        return None
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    pad = torch.arange(T)[None, :] >= lengths[:, None]
    if "full" in kind and B > 1:
        pad[-1] = True
    return pad.flip(1) if kind == "left" else pad


def make_bias(kind: str | None, B: int, H: int, T_Q: int, T_K: int, g: torch.Generator):
    """The bias and the leaf tensor its gradient is checked on."""
    if kind is None:
        return None, None
    if kind == "alibi":  # -|i - j| * slope * learned scale, as d2v.model.alibi builds it
        scale = (torch.rand(H, generator=g) + 0.5).requires_grad_()
        dist = (torch.arange(T_Q)[:, None] - torch.arange(T_K)[None, :]).abs().float()
        return lambda s: -dist[None, None] * (0.25 * s)[None, :, None, None], scale  # (1, H, T_Q, T_K)
    shape = {"full": (B, H, T_Q, T_K), "key": (B, 1, 1, T_K), "head": (H, T_Q, T_K)}[kind]
    leaf = torch.randn(shape, generator=g).requires_grad_()
    return lambda b: b, leaf


def run(fn, q, k, v, pad, bias_fn, bias_leaf, dout):
    """Output and grads of q, k, v (and of the bias leaf) for one attention implementation."""
    leaves = [q, k, v] + ([bias_leaf] if bias_leaf is not None else [])
    out = fn(q, k, v, pad, bias_fn(bias_leaf) if bias_fn is not None else None)
    return out, torch.autograd.grad(out, leaves, dout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_attention_matches_reference(case, dtype):
    _, B, H, T_Q, T_K, D, padding, bias_kind = case
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, T_Q, D, generator=g).to(dtype).requires_grad_()
    k = torch.randn(B, H, T_K, D, generator=g).to(dtype).requires_grad_()
    v = torch.randn(B, H, T_K, D, generator=g).to(dtype).requires_grad_()
    pad = make_padding(padding, B, T_K, g)
    bias_fn, bias_leaf = make_bias(bias_kind, B, H, T_Q, T_K, g)
    dout = torch.randn(B, H, T_Q, D, generator=g).to(dtype)

    out, grads = run(ta.attention, q, k, v, pad, bias_fn, bias_leaf, dout)

    # Reference in fp32 on the same inputs (and the bias rounded to the inputs' dtype, as both paths do).
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref_bias_fn = None if bias_fn is None else (lambda b: bias_fn(b).to(dtype).float())
    ref, ref_grads = run(reference.attention, q32, k32, v32, pad, ref_bias_fn, bias_leaf, dout.float())

    assert out.shape == (B, H, T_Q, D) and out.dtype == dtype
    assert torch.isfinite(out).all()
    atol, rtol = TOL[dtype]
    names = ["out", "dq", "dk", "dv", "dbias"]
    for name, got, want in zip(names, (out, *grads), (ref, *ref_grads)):
        scale = want.abs().max().clamp(min=1.0).item()  # relative to the tensor's size
        torch.testing.assert_close(got.float(), want, atol=atol * scale, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}")


def test_fully_padded_rows_attend_uniformly():
    """A batch row whose keys are all padding gets the mean of v (as the reference), never NaN."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 21, 32, generator=g) for _ in range(3))
    pad = torch.zeros(2, 21, dtype=torch.bool)
    pad[1] = True
    bias = torch.randn(2, 2, 21, 21, generator=g)
    out = ta.attention(q, k, v, pad, bias)
    torch.testing.assert_close(out[1], v[1].mean(1, keepdim=True).expand(-1, 21, -1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, reference.attention(q, k, v, pad, bias), atol=2e-6, rtol=1e-5)


def test_strided_inputs_and_output_layout():
    """q, k, v straight from a fused qkv projection (non-contiguous views) work without copies, and the
    output is laid out (B, T, H, Dh) so merging heads is a free reshape."""
    g = torch.Generator().manual_seed(2)
    B, T, H, D = 2, 23, 2, 32
    qkv = torch.randn(B, T, 3, H, D, generator=g).permute(2, 0, 3, 1, 4)  # (3, B, H, T, Dh)
    q, k, v = qkv.unbind(0)
    pad = torch.arange(T)[None, :] >= torch.tensor([[T], [9]])
    out = ta.attention(q, k, v, pad)
    torch.testing.assert_close(out, reference.attention(q, k, v, pad), atol=2e-6, rtol=1e-5)
    assert out.transpose(1, 2).is_contiguous()


def test_forward_without_grad_saves_nothing():
    q, k, v = (torch.randn(1, 1, 17, 32) for _ in range(3))
    with torch.no_grad():
        out = ta.attention(q, k, v)
    assert out.grad_fn is None
    torch.testing.assert_close(out, reference.attention(q, k, v), atol=2e-6, rtol=1e-5)
