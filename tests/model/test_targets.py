"""make_targets against a slow per-sample re-computation (padding must not enter any statistic)."""

import pytest
import torch

from d2v.model import preset
from d2v.model.targets import instance_norm, make_targets

EPS = 1e-5


def _instance_norm(a):  # (L, D): normalize each channel over time
    return (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + EPS)


def _layer_norm(a):  # (L, D): normalize each position over channels
    return (a - a.mean(1, keepdim=True)) / torch.sqrt(a.var(1, unbiased=False, keepdim=True) + EPS)


def slow_targets(layers, lengths, top_k, in_layer, ln_layer, ln_final, in_final):
    """One sample at a time, on its real positions only, in float64."""
    B, T, D = layers[0].shape
    out = torch.zeros(B, T, D, dtype=torch.float64)
    for b, n in enumerate(lengths):
        total = torch.zeros(n, D, dtype=torch.float64)
        for t in layers[len(layers) - top_k:]:
            a = t[b, :n].double()
            if in_layer:
                a = _instance_norm(a)
            if ln_layer:
                a = _layer_norm(a)
            total += a
        y = total / top_k
        if ln_final:
            y = _layer_norm(y)
        if in_final:
            y = _instance_norm(y)
        out[b, :n] = y
    return out


def _layers(n_layers, lengths, T, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(n_layers):
        t = torch.randn(len(lengths), T, D, generator=g) * (1 + i) + torch.randn(1, 1, D, generator=g)
        for b, n in enumerate(lengths):
            t[b, n:] = 1e4 * torch.randn(T - n, D, generator=g)  # large garbage at padding
        layers.append(t)
    pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    return layers, pad


def _settings(modality, size):
    cfg = preset(modality, size)
    t = cfg.target
    return cfg.encoder.depth, t.top_k, (t.instance_norm_target_layer, t.layer_norm_target_layer,
                                        t.layer_norm_targets, t.instance_norm_targets)


@pytest.mark.parametrize("modality, size, expected", [
    ("image", "base", (10, 10, (True, False, True, False))),    # instance norm per layer + final LN
    ("text", "large", (24, 24, (False, True, False, True))),    # LN per layer + final instance norm
    ("audio", "base", (12, 8, (True, False, False, False))),    # instance norm per layer, top 8 of 12
])
@pytest.mark.parametrize("padded", [False, True])
def test_make_targets_matches_slow_recomputation(modality, size, expected, padded):
    depth, top_k, flags = _settings(modality, size)
    assert (depth, top_k, flags) == expected
    lengths = [11, 7, 3, 11] if padded else [11] * 4
    layers, pad = _layers(depth, lengths, 11)
    y = make_targets(layers, pad if padded else None, top_k, *flags)
    assert y.shape == (4, 11, 16) and y.dtype == torch.float32
    ref = slow_targets(layers, lengths, top_k, *flags)
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-4)
    if padded:
        assert (y[pad] == 0).all()


def test_targets_are_float32_from_half_precision():
    layers, pad = _layers(3, [6, 4], 6)
    half = [t.clamp(-100, 100).half() for t in layers]
    y = make_targets(half, pad, 2)
    assert y.dtype == torch.float32
    ref = slow_targets([t.float() for t in half], [6, 4], 2, True, False, False, False)
    torch.testing.assert_close(y.double(), ref, atol=1e-4, rtol=1e-4)


def test_top_k_larger_than_the_layers():
    layers, _ = _layers(2, [4], 4)
    with pytest.raises(ValueError, match="top_k=3"):
        make_targets(layers, None, 3)


def test_instance_norm_without_padding_matches_torch():
    x = torch.randn(3, 10, 8) * 3 + 1
    ref = torch.nn.functional.instance_norm(x.transpose(1, 2), eps=EPS).transpose(1, 2)
    torch.testing.assert_close(instance_norm(x), ref)
    no_padding = torch.zeros(3, 10, dtype=torch.bool)
    torch.testing.assert_close(instance_norm(x, no_padding), ref, atol=1e-5, rtol=1e-5)
    empty = instance_norm(x, torch.ones(3, 10, dtype=torch.bool))  # fully padded rows: zeros
    assert (empty == 0).all()
