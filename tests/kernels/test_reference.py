"""The PyTorch reference ops against naive re-implementations written out here."""

import inspect
import math

import pytest
import torch

from d2v import kernels
from d2v.kernels import reference


def naive_attention(q, k, v, key_padding_mask=None, bias=None):
    """softmax(q k^T / sqrt(Dh) + bias, padded keys at -inf) v, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    if bias is not None:
        logits = logits + bias.double()
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    return logits.softmax(-1) @ v


def _qkv(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dtype) for _ in range(3)]


def _padding(lengths, T):
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]  # (B, T), True at padding


def test_public_ops_have_the_reference_signatures():
    assert inspect.signature(kernels.attention) == inspect.signature(reference.attention)
    assert inspect.signature(kernels.conv_block) == inspect.signature(reference.conv_block)


@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 1, 1, 8), (3, 2, 17, 16)])
@pytest.mark.parametrize("bias_kind", [None, "heads", "full"])
@pytest.mark.parametrize("padded", [False, True])
def test_attention_matches_naive_fp32(shape, bias_kind, padded):
    B, H, T, Dh = shape
    q, k, v = _qkv(shape)
    g = torch.Generator().manual_seed(1)
    bias = {
        None: None,
        "heads": torch.randn(1, H, T, T, generator=g),
        "full": -torch.rand(B, H, T, T, generator=g) * 20,
    }[bias_kind]
    pad = _padding([max(1, T - 3 * i) for i in range(B)], T) if padded else None
    out = reference.attention(q, k, v, key_padding_mask=pad, bias=bias)
    assert out.shape == (B, H, T, Dh) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, pad, bias), atol=1e-5, rtol=1e-5)


def test_attention_matches_naive_fp16():
    B, H, T, Dh = 2, 4, 13, 8
    q, k, v = _qkv((B, H, T, Dh), torch.float16)
    bias = (-torch.arange(T).float()[None, :] * 0.3).expand(T, T)[None, None].repeat(1, H, 1, 1)
    pad = _padding([13, 6], T)
    out = reference.attention(q, k, v, key_padding_mask=pad, bias=bias)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, pad, bias), atol=1e-2, rtol=1e-2)


def test_attention_gradients_match_naive():
    shape = (2, 2, 9, 4)
    q, k, v = [t.requires_grad_() for t in _qkv(shape)]
    qd, kd, vd = [t.detach().double().requires_grad_() for t in (q, k, v)]
    pad = _padding([9, 5], 9)
    bias = -torch.rand(1, 2, 9, 9)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    (reference.attention(q, k, v, pad, bias) * w).sum().backward()
    (naive_attention(qd, kd, vd, pad, bias) * w).sum().backward()
    for a, b in [(q, qd), (k, kd), (v, vd)]:
        torch.testing.assert_close(a.grad.double(), b.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_attention_fully_padded_row_is_finite(dtype):
    q, k, v = _qkv((3, 2, 6, 4), dtype)
    pad = _padding([6, 0, 3], 6)  # row 1 has no real key at all
    # a large negative bias (far ALiBi distances) must not overflow together with the padding fill
    bias = torch.full((1, 2, 6, 6), -6e4 if dtype == torch.float16 else -1e30)
    bias[..., :, :2] = 0.0
    out = reference.attention(q, k, v, key_padding_mask=pad, bias=bias)
    assert torch.isfinite(out).all()
    # the rows that do have real keys are unaffected by the empty row
    torch.testing.assert_close(out[[0, 2]].double(), naive_attention(q, k, v, pad, bias)[[0, 2]],
                               atol=1e-2 if dtype == torch.float16 else 1e-5, rtol=1e-2)


def test_attention_padded_keys_get_no_weight():
    q, k, v = _qkv((2, 2, 8, 4))
    pad = _padding([5, 8], 8)
    out = reference.attention(q, k, v, key_padding_mask=pad)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 5:], v2[0, :, 5:] = 1e4, -1e4  # garbage at row 0's padded keys
    torch.testing.assert_close(reference.attention(q, k2, v2, key_padding_mask=pad), out)


def test_attention_dropout():
    q, k, v = _qkv((2, 2, 8, 4))
    torch.manual_seed(0)
    dropped = reference.attention(q, k, v, dropout_p=0.5)
    assert dropped.shape == q.shape and torch.isfinite(dropped).all()
    assert not torch.allclose(dropped, reference.attention(q, k, v))


# --- conv_block -----------------------------------------------------------------------------------


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _channel_layer_norm(y, eps):
    mean = y.mean(1, keepdim=True)
    var = ((y - mean) ** 2).mean(1, keepdim=True)
    return (y - mean) / torch.sqrt(var + eps)


def naive_conv_block(x, weight, bias, padding_mask=None, groups=1, residual=False, eps=1e-5):
    """Grouped "same" convolution written as a sum over kernel offsets (fairseq SamePad: pad K//2
    on the left and K//2 - 1 on the right when K is even), then LayerNorm over channels, GELU and
    the residual, in float64."""
    x, weight = x.double(), weight.double()
    if padding_mask is not None:
        x = x * (~padding_mask).unsqueeze(1)
    K = weight.shape[-1]
    left, right = K // 2, K // 2 - (1 - K % 2)
    c_out, c_in_g = weight.shape[:2]
    c_out_g = c_out // groups
    spatial = x.shape[2:]
    xp = torch.nn.functional.pad(x, (left, right) * len(spatial))
    y = torch.zeros(x.shape[0], c_out, *spatial, dtype=torch.float64)
    for g in range(groups):
        xs = xp[:, g * c_in_g:(g + 1) * c_in_g]
        ws = weight[g * c_out_g:(g + 1) * c_out_g]
        if len(spatial) == 1:
            for j in range(K):
                y[:, g * c_out_g:(g + 1) * c_out_g] += torch.einsum(
                    "oc,bct->bot", ws[:, :, j], xs[:, :, j:j + spatial[0]])
        else:
            for i in range(K):
                for j in range(K):
                    y[:, g * c_out_g:(g + 1) * c_out_g] += torch.einsum(
                        "oc,bchw->bohw", ws[:, :, i, j], xs[:, :, i:i + spatial[0], j:j + spatial[1]])
    if bias is not None:
        y = y + bias.double().reshape(1, -1, *([1] * len(spatial)))
    y = _gelu(_channel_layer_norm(y, eps))
    return y + x if residual else y


@pytest.mark.parametrize("kernel", [1, 4, 5, 9])
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("residual", [False, True])
def test_conv_block_1d_matches_naive(kernel, groups, residual):
    g = torch.Generator().manual_seed(kernel * 10 + groups)
    B, C, T = 3, 8, 11
    x = torch.randn(B, C, T, generator=g)
    w = torch.randn(C, C // groups, kernel, generator=g) * 0.3
    b = torch.randn(C, generator=g)
    pad = _padding([11, 7, 1], T)
    for mask in (None, pad):
        out = reference.conv_block(x, w, b, mask, groups, residual)
        assert out.shape == (B, C, T)
        torch.testing.assert_close(out.double(), naive_conv_block(x, w, b, mask, groups, residual),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", [3, 4])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_block_2d_matches_naive(kernel, groups):
    g = torch.Generator().manual_seed(kernel + groups)
    B, C, H, W = 2, 4, 5, 6
    x = torch.randn(B, C, H, W, generator=g)
    w = torch.randn(C, C // groups, kernel, kernel, generator=g) * 0.3
    b = torch.randn(C, generator=g)
    pad = torch.zeros(B, H, W, dtype=torch.bool)
    pad[1, 3:, :] = True
    for mask in (None, pad):
        out = reference.conv_block(x, w, b, mask, groups, residual=True)
        assert out.shape == (B, C, H, W)
        torch.testing.assert_close(out.double(), naive_conv_block(x, w, b, mask, groups, True),
                                   atol=1e-5, rtol=1e-5)


def test_conv_block_changes_width_without_residual():
    x = torch.randn(2, 6, 9)
    w = torch.randn(4, 6, 3)
    out = reference.conv_block(x, w, None)
    assert out.shape == (2, 4, 9)
    torch.testing.assert_close(out.double(), naive_conv_block(x, w, None), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", [4, 7])
def test_conv_block_padding_is_irrelevant(kernel):
    """Garbage (even NaN) at padded positions never reaches real ones, and a right-padded row equals
    the same row computed alone at its own length."""
    g = torch.Generator().manual_seed(kernel)
    C, T, n = 8, 12, 7
    x = torch.randn(2, C, T, generator=g)
    w = torch.randn(C, C // 2, kernel, generator=g)
    b = torch.randn(C, generator=g)
    pad = _padding([T, n], T)
    out = reference.conv_block(x, w, b, pad, groups=2, residual=True)
    x_bad = x.clone()
    x_bad[1, :, n:] = float("nan")
    out_bad = reference.conv_block(x_bad, w, b, pad, groups=2, residual=True)
    assert torch.isfinite(out_bad).all()
    torch.testing.assert_close(out_bad, out)
    alone = reference.conv_block(x[1:, :, :n], w, b, None, groups=2, residual=True)
    torch.testing.assert_close(out[1:, :, :n], alone, atol=1e-5, rtol=1e-5)
