"""`check_kernel`: a kernel implementation against the reference on given inputs, within the dtype's
tolerance; deliberately wrong implementations (off by a little, NaN, wrong shape, raising, wrong only
at padding) are told apart from right ones."""

import pytest
import torch

from d2v.kernels import reference
from d2v.kernels.check import TOLERANCES, check_kernel


def attention_args(dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 9, 16, generator=g).to(dtype) for _ in range(3))
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    bias = -torch.arange(9.0).view(1, 1, 1, 9).expand(1, 2, 9, 9) * 0.1
    return (q, k, v, pad, bias)


def conv_args(dtype: torch.dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 11, generator=g).to(dtype)
    w = torch.randn(8, 4, 5, generator=g).to(dtype)
    pad = torch.zeros(2, 11, dtype=torch.bool)
    pad[0, 7:] = True
    return (x, w, None, pad, 2, True, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_the_reference_itself_passes(dtype):
    for op, args in (("attention", attention_args(dtype)), ("conv_block", conv_args(dtype))):
        check = check_kernel(op, getattr(reference, op), args)
        assert check.ok and check.dtype == dtype, str(check)
        assert check.max_error <= check.tolerance


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_an_error_beyond_the_dtype_tolerance_fails(dtype):
    atol, _ = TOLERANCES[dtype]
    args = attention_args(dtype)
    # a tenth of the tolerance passes, ten times fails (after rounding to the dtype)
    small = check_kernel("attention", lambda *a: reference.attention(*a) + atol / 10, args)
    big = check_kernel("attention", lambda *a: reference.attention(*a) + atol * 10, args)
    assert small.ok, str(small)
    assert not big.ok and big.max_error > big.tolerance
    assert "differs from the reference" in str(big)


def test_broken_kernels_fail():
    args = conv_args(torch.float16)
    nan = check_kernel("conv_block", lambda *a: reference.conv_block(*a) * float("nan"), args)
    assert not nan.ok and nan.max_error == float("inf")
    shape = check_kernel("conv_block", lambda *a: reference.conv_block(*a)[..., :-1], args)
    assert not shape.ok

    def boom(*a):
        raise RuntimeError("no kernel image is available for execution on the device")

    assert not check_kernel("conv_block", boom, args).ok


def test_padded_positions_are_not_compared():
    """Callers ignore outputs at padding; a kernel may leave anything there."""
    args = conv_args(torch.float32)
    pad = args[3]

    def garbage_at_padding(*a):
        return reference.conv_block(*a).masked_fill(pad.unsqueeze(1), 123.0)

    assert check_kernel("conv_block", garbage_at_padding, args).ok
    q_args = attention_args(torch.float32)
    qpad = q_args[3]

    def attention_garbage_at_padding(*a):
        return reference.attention(*a).masked_fill(qpad[:, None, :, None], -7.0)

    assert check_kernel("attention", attention_garbage_at_padding, q_args).ok
    wrong_inside = lambda *a: reference.attention(*a).masked_fill(~qpad[:, None, :, None], 0.0)
    assert not check_kernel("attention", wrong_inside, q_args).ok
