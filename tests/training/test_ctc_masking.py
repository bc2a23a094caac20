"""Fine-tuning's time and channel masks: shapes, span lengths, the rates they reach, the noise written
into masked frames, and that padding is never touched."""

import itertools

import numpy as np
import pytest
import torch

from d2v.training.ctc_masking import CTCMasking, apply_ctc_masks, span_mask


def runs(row: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D bool array."""
    return [len(list(g)) for v, g in itertools.groupby(row) if v]


def test_span_mask_rate_spans_and_lengths():
    rng = np.random.default_rng(0)
    lengths = [1000, 600, 37]
    mask = span_mask(lengths, 1000, 0.5, 10, rng, min_spans=1)
    assert mask.shape == (3, 1000) and mask.dtype == bool
    assert not mask[1, 600:].any() and not mask[2, 37:].any()  # never past a row's length
    assert all(r >= 10 for row, n in zip(mask, lengths, strict=True) for r in runs(row[:n]))  # whole spans
    # 0.5 * 1000 / 10 = 50 spans of 10 over 990 starts: overlaps leave about 1 - exp(-0.5) = 39 % masked
    many = span_mask([1000] * 200, 1000, 0.5, 10, np.random.default_rng(1))
    assert 0.36 < many.mean() < 0.43


def test_span_mask_edge_cases():
    rng = np.random.default_rng(0)
    assert not span_mask([50, 50], 50, 0.0, 10, rng, min_spans=1).any()  # mask_prob 0: nothing, whatever the minimum
    short = span_mask([4], 8, 0.5, 10, rng, min_spans=1)  # shorter than one span: the clip is masked whole
    assert short[0, :4].all() and not short[0, 4:].any()
    assert not span_mask([0], 5, 0.5, 2, rng, min_spans=1).any()
    # channels: 0.25 * 64 / 5 = 3.2 spans of 5 channels; no minimum
    ch = span_mask([64] * 500, 64, 0.25, 5, np.random.default_rng(2))
    assert 0.17 < ch.mean() < 0.25 and all(r >= 5 for row in ch[:50] for r in runs(row))


def test_masks_write_noise_and_zero_channels():
    torch.manual_seed(0)
    x = torch.randn(4, 300, 64) * 3 + 5  # features far from the noise's N(0, 0.01)
    padding = torch.zeros(4, 300, dtype=torch.bool)
    padding[1, 200:] = True
    masking = CTCMasking(mask_prob=0.5, mask_length=10, noise_std=0.01, mask_channel_prob=0.25, mask_channel_length=5)
    out, time, channels = apply_ctc_masks(x, padding, masking, np.random.default_rng(0))
    assert out.shape == x.shape and time.shape == (4, 300) and channels.shape == (4, 64)
    assert not time[padding].any()
    assert 0.25 < time[~padding].float().mean() < 0.5 and 0.1 < channels.float().mean() < 0.35
    keep = ~channels.unsqueeze(1)  # (B, 1, D): channels not zeroed
    noise = out[time.unsqueeze(-1).expand_as(x) & keep.expand_as(x)]
    assert abs(float(noise.mean())) < 0.002 and float(noise.std()) == pytest.approx(0.01, rel=0.05)
    untouched = (~time).unsqueeze(-1) & keep
    assert torch.equal(out[untouched.expand_as(x)], x[untouched.expand_as(x)])  # unmasked frames unchanged
    assert (out.masked_select(channels.unsqueeze(1).expand_as(x)) == 0).all()  # masked channels zero at every frame
    assert not torch.equal(out, x) and x.mean() > 4  # the input is not modified in place


def test_masks_are_a_function_of_the_generator():
    x = torch.randn(2, 100, 16)
    masking = CTCMasking(mask_channel_length=2)
    a = apply_ctc_masks(x, None, masking, np.random.default_rng(7))
    b = apply_ctc_masks(x, None, masking, np.random.default_rng(7))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    c = apply_ctc_masks(x, None, masking, np.random.default_rng(8))
    assert not torch.equal(a[1], c[1])


def test_gradient_flows_only_through_unmasked_frames():
    x = torch.randn(1, 200, 8, requires_grad=True)
    out, time, channels = apply_ctc_masks(x, None, CTCMasking(mask_channel_length=2), np.random.default_rng(3))
    out.sum().backward()
    expect = (~time).unsqueeze(-1) & ~channels.unsqueeze(1)
    assert torch.equal(x.grad != 0, expect)
