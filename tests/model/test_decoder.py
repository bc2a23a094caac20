"""The convolutional decoder: the layer recipe, residual wiring, 2-D grid layout, padding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2v.model.decoder import ConvDecoder


def _decoder(seed=0, **kw):
    torch.manual_seed(seed)
    args = {"in_dim": 16, "dim": 8, "kernel": 3, "layers": 3, "groups": 2, "residual": True, "out_dim": 16}
    args.update(kw)
    return ConvDecoder(**args).eval()


def _reference_forward(dec: ConvDecoder, x):
    """fairseq Decoder1d/2d: conv (padding k//2) -> SamePad -> LN over channels (no affine) -> GELU,
    plus the input where the widths match; then the projection."""
    B, _, D = x.shape
    h = x.transpose(1, 2)
    if dec.grid is not None:
        h = h.reshape(B, D, *dec.grid)
    for conv, res in zip(dec.convs, dec.residual, strict=True):
        y = conv(h)
        if conv.kernel_size[0] % 2 == 0:
            y = y[..., :-1] if dec.grid is None else y[..., :-1, :-1]
        y = F.gelu(F.layer_norm(y.movedim(1, -1), (y.shape[1],)).movedim(-1, 1))
        h = y + h if res else y
    return dec.proj(h.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("kernel", [3, 4, 7])
@pytest.mark.parametrize("grid", [None, (4, 5)])
def test_matches_reference_recipe(kernel, grid):
    dec = _decoder(kernel=kernel, grid=grid)
    x = torch.randn(2, 20, 16)
    out = dec(x)
    assert out.shape == (2, 20, 16)
    torch.testing.assert_close(out, _reference_forward(dec, x), atol=1e-5, rtol=1e-5)
    assert isinstance(dec.convs[0], nn.Conv1d if grid is None else nn.Conv2d)


def test_residual_wiring_and_projection():
    narrow = _decoder(in_dim=16, dim=8, layers=3, residual=True)
    assert narrow.residual == [False, True, True]  # no residual into a narrower first layer
    same = _decoder(in_dim=8, dim=8, out_dim=8, layers=2, residual=True)
    assert same.residual == [True, True]
    assert _decoder(residual=False).residual == [False, False, False]
    assert isinstance(narrow.proj, nn.Linear) and narrow.proj.out_features == 16
    two = _decoder(projection_layers=2, projection_ratio=2.0)
    assert [type(m) for m in two.proj] == [nn.Linear, nn.GELU, nn.Linear]
    assert (two.proj[0].in_features, two.proj[0].out_features, two.proj[2].out_features) == (8, 16, 16)
    assert narrow.convs[0].groups == 2 and narrow.convs[0].in_channels == 16


def test_2d_decoder_convolves_the_row_major_patch_grid():
    """A change at patch (r, c) only reaches its 3x3 neighbourhood through one k=3 layer."""
    H, W = 5, 6
    dec = _decoder(layers=1, grid=(H, W))
    x = torch.randn(1, H * W, 16)
    base = dec(x)
    r, c = 2, 4
    x2 = x.clone()
    x2[0, r * W + c] += 1.0
    changed = (dec(x2) - base).abs().amax(-1)[0] > 1e-6  # (T,)
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[r - 1:r + 2, c - 1:c + 2] = True
    assert torch.equal(changed.reshape(H, W), expected)


def test_1d_receptive_field():
    dec = _decoder(layers=2, kernel=5)
    x = torch.randn(1, 30, 16)
    x2 = x.clone()
    x2[0, 15] += 1.0
    changed = ((dec(x2) - dec(x)).abs().amax(-1)[0] > 1e-6).nonzero().squeeze(1)
    assert changed.tolist() == list(range(11, 20))  # two layers of +-2


def test_padding_invariance():
    dec = _decoder(kernel=4)
    x = torch.randn(2, 12, 16)
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[1, 7:] = True
    x[1, 7:] = 1e4  # garbage at padding
    out = dec(x, pad)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1, :7], dec(x[1:, :7])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0], dec(x[:1])[0], atol=1e-5, rtol=1e-5)
