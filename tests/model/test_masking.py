"""Masks: exact counts per modality, block structure, independent copies, padding, and the
gather/scatter between full and visible tokens."""

import pytest
import torch

from d2v.model import preset
from d2v.model.masking import (
    block_mask,
    decoder_input,
    gather_visible,
    mask_info,
    random_mask,
    scatter_visible,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _image_masks(size, batch=2, seed=0):
    m = preset("image", size).mask
    grid = (224 // 16,) * 2
    return block_mask(grid, None, batch, m.clone_batch, m.mask_prob, m.mask_length, m.mask_prob_adjust,
                      m.inverse, _gen(seed))


@pytest.mark.parametrize("size, visible", [("base", 39), ("large", 49)])
def test_image_exact_visible_count(size, visible):
    masks = _image_masks(size)
    assert masks.shape == (2 * 16, 196) and masks.dtype == torch.bool
    assert ((~masks).sum(1) == visible).all()  # keep int(L * (1 - R))


def test_image_tiny_and_huge_grid_counts():
    tiny = preset("image", "tiny")
    m = tiny.mask
    grid = (tiny.encoder.image.image_size // tiny.encoder.image.patch_size,) * 2
    masks = block_mask(grid, None, 3, m.clone_batch, m.mask_prob, m.mask_length, m.mask_prob_adjust,
                       m.inverse, _gen())
    assert ((~masks).sum(1) == int(64 * (1 - 0.8))).all()
    huge = block_mask((16, 16), None, 2, 4, 0.75, 3, 0.1, True, _gen())  # ViT-H/14 on 224: 64 of 256
    assert ((~huge).sum(1) == 64).all()


def test_audio_exact_counts_at_each_rows_length():
    m = preset("audio", "base").mask
    lengths = [999, 500, 37, 3, 0]
    T = max(lengths)
    pad = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    masks = block_mask((T,), pad, len(lengths), m.clone_batch, m.mask_prob, m.mask_length, m.mask_prob_adjust,
                       m.inverse, _gen())
    assert masks.shape == (len(lengths) * 8, T)
    counts = masks.sum(1).reshape(len(lengths), 8)
    for b, n in enumerate(lengths):
        assert (counts[b] == int(n * 0.5)).all()  # mask int(T * R): 499 of 999 frames
    assert not (masks & pad.repeat_interleave(8, 0)).any()


def test_text_exact_counts():
    lengths = [512, 300, 7, 1, 0]
    pad = torch.arange(512)[None, :] >= torch.tensor(lengths)[:, None]
    masks = random_mask(pad, len(lengths), 512, 8, 0.48, _gen())
    assert masks.shape == (40, 512)
    pad_rep = pad.repeat_interleave(8, 0)
    kept = (~masks & ~pad_rep).sum(1).reshape(len(lengths), 8)
    for b, n in enumerate(lengths):
        assert (kept[b] == int(n * (1 - 0.48))).all()  # 266 of 512 kept, 246 masked
    assert not (masks & pad_rep).any()
    assert int(masks[0].sum()) == 246
    unpadded = random_mask(None, 2, 20, 3, 0.5, _gen())
    assert (unpadded.sum(1) == 10).all()


def _neighbours(visible, h, w):
    """Mean number of visible 4-neighbours of a visible token."""
    v = visible.reshape(-1, h, w).float()
    n = torch.zeros_like(v)
    n[:, 1:] += v[:, :-1]
    n[:, :-1] += v[:, 1:]
    n[:, :, 1:] += v[:, :, :-1]
    n[:, :, :-1] += v[:, :, 1:]
    return float((n * v).sum() / v.sum())


def test_inverse_block_structure_is_clustered():
    """Visible image tokens come in 3x3 blocks: far more visible neighbours than a uniform mask
    with the same count (about 0.8 for 39 of 196)."""
    visible = ~_image_masks("base", batch=8)
    uniform = ~random_mask(None, 8, 196, 16, 1 - 39 / 196, _gen(1))
    assert ((~uniform).sum(1) == 196 - 39).all()
    clustered, scattered = _neighbours(visible, 14, 14), _neighbours(uniform, 14, 14)
    assert scattered < 1.2
    assert clustered > 1.8


def _clamped_block(r, c, h, w, b=3):
    rows = [min(max(r + d, 0), h - 1) for d in range(-(b // 2), b - b // 2)]
    cols = [min(max(c + d, 0), w - 1) for d in range(-(b // 2), b - b // 2)]
    return {(i, j) for i in rows for j in cols}


def test_inverse_single_block_is_a_clamped_square():
    """One centre and a target of 9: the visible set contains a whole (border-clamped) 3x3 block,
    and equals an exact 3x3 square whenever the centre is away from the border."""
    p = 1 - 9.5 / 196  # keep fraction 9.5/196: int(196*p_keep/9) = 1 centre, int(196*p_keep) = 9
    masks = block_mask((14, 14), None, 50, 4, p, 3, 0.0, True, _gen())
    assert ((~masks).sum(1) == 9).all()
    squares = 0
    for row in ~masks:
        cells = {(int(i) // 14, int(i) % 14) for i in row.nonzero()}
        blocks = [_clamped_block(r, c, 14, 14) for r in range(14) for c in range(14)]
        assert any(b <= cells for b in blocks)
        squares += any(b == cells and len(b) == 9 for b in blocks)
    assert squares > 0.5 * 200  # interior centres: (12/14)^2 ~ 73%


def test_audio_blocks_form_runs():
    T = 400
    masks = block_mask((T,), None, 4, 8, 0.5, 5, 0.05, False, _gen())
    uniform = random_mask(None, 4, T, 8, 0.5, _gen(1))

    def mean_run(m):
        starts = (m[:, 1:] & ~m[:, :-1]).sum() + m[:, 0].sum()
        return float(m.sum() / starts)

    assert mean_run(uniform) < 2.5
    assert mean_run(masks) > 3.5


@pytest.mark.parametrize("kind", ["image", "audio", "text"])
def test_copies_of_a_sample_get_independent_masks(kind):
    if kind == "image":
        masks = _image_masks("base", batch=2)
        M = 16
    elif kind == "audio":
        M = 8
        masks = block_mask((200,), None, 2, M, 0.5, 5, 0.05, False, _gen())
    else:
        M = 8
        masks = random_mask(None, 2, 64, M, 0.48, _gen())
    rows = masks.reshape(2, M, -1)
    for b in range(2):
        assert len({tuple(r.tolist()) for r in rows[b]}) == M


def test_masks_are_reproducible_from_the_generator():
    a = block_mask((14, 14), None, 2, 4, 0.8, 3, 0.07, True, _gen(5))
    b = block_mask((14, 14), None, 2, 4, 0.8, 3, 0.07, True, _gen(5))
    c = block_mask((14, 14), None, 2, 4, 0.8, 3, 0.07, True, _gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(random_mask(None, 2, 30, 2, 0.5, _gen(1)), random_mask(None, 2, 30, 2, 0.5, _gen(1)))


def test_2d_masks_take_no_padding():
    pad = torch.zeros(1, 196, dtype=torch.bool)
    pad[0, -1] = True
    with pytest.raises(ValueError, match="padding"):
        block_mask((14, 14), pad, 1, 2, 0.8, 3)
    block_mask((14, 14), torch.zeros(1, 196, dtype=torch.bool), 1, 2, 0.8, 3)  # no real padding: fine


# --- mask_info / gather / scatter -----------------------------------------------------------------


def _padded_mask(seed=0):
    g = _gen(seed)
    lengths = torch.tensor([9, 6, 2, 0])
    pad = torch.arange(9)[None, :] >= lengths[:, None]
    mask = (torch.rand(4, 9, generator=g) < 0.5) & ~pad
    return mask, pad


def test_mask_info_never_makes_padding_visible():
    mask, pad = _padded_mask()
    info = mask_info(mask, pad)
    visible = ~mask & ~pad
    counts = visible.sum(1)
    assert info.ids_keep.shape == (4, int(counts.max()))
    assert torch.equal((~info.kept_padding_mask).sum(1), counts)
    for b in range(4):
        ids = info.ids_keep[b, : int(counts[b])]
        assert torch.equal(ids, visible[b].nonzero().squeeze(1))  # increasing positions
        assert not pad[b, ids].any() and not mask[b, ids].any()


def test_gather_scatter_round_trip():
    mask, pad = _padded_mask(1)
    info = mask_info(mask, pad)
    x = torch.randn(4, 9, 5)
    vis = gather_visible(x, info)
    assert vis.shape == (4, info.ids_keep.shape[1], 5)
    visible = ~mask & ~pad
    for b in range(4):
        torch.testing.assert_close(vis[b][~info.kept_padding_mask[b]], x[b][visible[b]])
    # scattering back into x itself restores it; into zeros it keeps only the visible tokens
    assert torch.equal(scatter_visible(vis, info, x), x)
    assert torch.equal(scatter_visible(vis, info, torch.zeros_like(x)), x * visible.unsqueeze(-1))
    # the unused slots of short rows are ignored
    vis_bad = vis.clone()
    vis_bad[info.kept_padding_mask] = float("nan")
    assert torch.equal(scatter_visible(vis_bad, info, x), x)


def test_mask_info_with_nothing_visible():
    mask = torch.ones(3, 5, dtype=torch.bool)
    info = mask_info(mask)
    assert info.ids_keep.shape == (3, 0) and info.kept_padding_mask.shape == (3, 0)
    x = torch.randn(3, 5, 2)
    assert gather_visible(x, info).shape == (3, 0, 2)
    assert torch.equal(scatter_visible(gather_visible(x, info), info, x), x)


def test_rows_with_equal_visible_counts_are_not_ragged():
    mask, pad = _padded_mask(2)
    assert mask_info(mask, pad).ragged  # rows of 9, 6, 2 and 0 tokens
    even = torch.zeros(4, 8, dtype=torch.bool)
    for b in range(4):
        even[b, torch.randperm(8, generator=_gen(b))[:3]] = True  # 5 visible in every row
    info = mask_info(even)
    assert not info.ragged and not info.kept_padding_mask.any()
    x = torch.randn(4, 8, 3)
    # the one-scatter path of unragged rows puts the tokens where the indexed path does
    assert torch.equal(scatter_visible(gather_visible(x, info), info, torch.zeros_like(x)), x * (~even).unsqueeze(-1))


@pytest.mark.parametrize("seed", [2, 3])
def test_decoder_input_draws_noise_only_at_masked_positions(seed):
    mask, pad = _padded_mask(seed)
    info = mask_info(mask, pad)
    x = torch.randn(4, 9, 5)
    vis = gather_visible(x, info)
    torch.manual_seed(7)
    full = decoder_input(vis, info, 0.5)
    torch.manual_seed(7)
    noise = torch.randn(int(mask.sum()), 5) * 0.5  # exactly one draw per masked token, in row-major order
    assert torch.equal(full[mask], noise)
    visible = ~mask & ~pad
    assert torch.equal(full[visible], x[visible])
    assert not full[pad].any()  # padding: zeros, no noise drawn for it
