"""Symmetric ALiBi with a learned, clamped per-head scale."""

import pytest
import torch

from d2v.model.alibi import ALiBi, alibi_slopes


def test_slopes_power_of_two():
    assert alibi_slopes(8) == pytest.approx([2.0 ** -i for i in range(1, 9)])
    assert alibi_slopes(16) == pytest.approx([2.0 ** (-0.5 * i) for i in range(1, 17)])
    assert alibi_slopes(1) == pytest.approx([2.0 ** -8])


def test_slopes_twelve_heads():
    """The 8-head set plus every other slope of the 16-head set (fairseq / Press et al.)."""
    expected = [2.0 ** -i for i in range(1, 9)] + [2.0 ** -0.5, 2.0 ** -1.5, 2.0 ** -2.5, 2.0 ** -3.5]
    assert alibi_slopes(12) == pytest.approx(expected)
    assert len(alibi_slopes(6)) == 6 and alibi_slopes(6)[:4] == pytest.approx(alibi_slopes(4))


def test_bias_values_and_shapes():
    alibi = ALiBi(4)
    with torch.no_grad():
        alibi.alibi_scale.copy_(torch.tensor([1.0, 2.0, 0.5, -3.0]))  # the last one clamps to 0
    pos = torch.arange(5)
    bias = alibi(pos).detach()
    assert bias.shape == (1, 4, 5, 5) and bias.dtype == torch.float32
    slopes = alibi_slopes(4)
    for h, scale in enumerate([1.0, 2.0, 0.5, 0.0]):
        for i in range(5):
            for j in range(5):
                assert float(bias[0, h, i, j]) == pytest.approx(-abs(i - j) * slopes[h] * scale)
    batched = alibi(torch.stack([pos, pos + 7]))
    assert batched.shape == (2, 4, 5, 5)
    torch.testing.assert_close(batched[1], bias[0])  # only distances matter


def test_gathered_positions_keep_original_distances():
    alibi = ALiBi(2)
    ids = torch.tensor([[0, 3, 4, 9], [1, 2, 6, 7]])
    full = alibi(torch.arange(10))[0]  # (H, 10, 10)
    gathered = alibi(ids)
    for b in range(2):
        torch.testing.assert_close(gathered[b], full[:, ids[b]][:, :, ids[b]])


def test_scale_is_learned():
    alibi = ALiBi(3)
    alibi(torch.arange(4)).sum().backward()
    assert alibi.alibi_scale.grad is not None and (alibi.alibi_scale.grad != 0).all()
    assert "slopes" not in alibi.state_dict()  # recomputed, not stored
