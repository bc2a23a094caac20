"""Masks for data2vec 2.0 pretraining, and the gather/scatter between full and visible tokens.

A mask is a (B*M, T) bool tensor, True at masked positions (the student must predict them). Rows
b*M .. b*M+M-1 are the M independent masks of sample b (sample-major, like `repeat_interleave`).
Padding is neither masked nor visible.

- `block_mask`: fairseq `compute_block_mask_1d/2d` with `require_same_masks`: draw
  int(L*(R+A)/B^d) block centres with replacement, set a B-wide block (B x B on a 2-D grid) around
  each, clamped at the borders, then set or unset random single positions until exactly int(L*R)
  are set. With `inverse`, R becomes 1-R first and the set blocks are the *visible* tokens (images).
- `random_mask`: MAE-style uniform masking that keeps exactly int(L*(1-R)) tokens (text).
"""

from typing import NamedTuple

import torch
from torch import Tensor

from d2v.model.config import MaskConfig

__all__ = ["MaskInfo", "block_mask", "decoder_input", "draw_mask", "gather_visible", "mask_info", "random_mask",
           "scatter_visible"]


class MaskInfo(NamedTuple):
    """A mask and the indices that gather the visible tokens of each row."""

    mask: Tensor
    """(B, T) bool, True at masked positions."""
    ids_keep: Tensor
    """(B, K) long, positions of the visible tokens in increasing order; K is the most any row has."""
    kept_padding_mask: Tensor
    """(B, K) bool, True where a row has fewer than K visible tokens."""
    ragged: bool = True
    """Whether some row has fewer than K visible tokens (`kept_padding_mask` has a True). When False,
    the encoders and the decoder run without a padding mask instead of applying an all-False one."""


def _lengths(padding_mask: Tensor | None, batch: int, length: int) -> list[int]:
    if padding_mask is None:
        return [length] * batch
    return (~padding_mask).sum(1).tolist()


def block_mask(
    grid: tuple[int, ...],
    padding_mask: Tensor | None,
    batch: int,
    clone_batch: int,
    mask_prob: float,
    mask_length: int,
    mask_prob_adjust: float = 0.0,
    inverse: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Block masks over a 1-D sequence or a 2-D grid.

    Args:
        grid: (T,) for sequences or (H, W) for images; tokens are flattened row-major.
        padding_mask: (batch, T) True at padding (1-D grids only); each row is masked at its own
            length, so padding is never masked nor visible.
        batch: samples B.
        clone_batch: masks per sample M.
        mask_prob: R, the fraction masked.
        mask_length: block width B.
        mask_prob_adjust: A, extra centres drawn before trimming.
        inverse: the blocks mark visible tokens (R is the fraction masked in the result either way).
        generator: random source (CPU).

    Returns:
        (batch * clone_batch, prod(grid)) bool, True at masked positions.
    """
    if len(grid) == 2 and padding_mask is not None and padding_mask.any():
        raise ValueError("2-D block masks take no padding")
    total = 1
    for g in grid:
        total *= g
    lengths = _lengths(padding_mask, batch, total)
    set_prob = 1.0 - mask_prob if inverse else mask_prob
    rows = torch.zeros(batch * clone_batch, total, dtype=torch.bool)
    offset = mask_length // 2
    steps = torch.arange(mask_length) - offset
    for b, length in enumerate(lengths):
        shape = (length,) if len(grid) == 1 else grid
        n_centres = int(length * (set_prob + mask_prob_adjust) / mask_length ** len(grid))
        target = int(length * set_prob)
        for m in range(clone_batch):
            row = torch.zeros(shape, dtype=torch.bool)
            if n_centres > 0:
                centres = [torch.randint(0, s, (n_centres,), generator=generator) for s in shape]
                # every offset combination of a B-wide (B x B) block, clamped at the borders
                index = [
                    (c[:, None] + steps[None, :]).clamp(0, s - 1) for c, s in zip(centres, shape, strict=True)
                ]
                if len(shape) == 1:
                    row[index[0].flatten()] = True
                else:
                    row[index[0][:, :, None].expand(-1, -1, mask_length), index[1][:, None, :]] = True
            row = _trim_to(row.flatten(), target, generator)
            if inverse:
                row = ~row
            rows[b * clone_batch + m, :length] = row
    return rows


def _trim_to(row: Tensor, target: int, generator: torch.Generator | None) -> Tensor:
    """Unset or set random single positions until exactly `target` are set."""
    n = int(row.sum())
    if n > target:
        on = row.nonzero().squeeze(1)
        row[on[torch.randperm(len(on), generator=generator)[: n - target]]] = False
    elif n < target:
        off = (~row).nonzero().squeeze(1)
        row[off[torch.randperm(len(off), generator=generator)[: target - n]]] = True
    return row


def random_mask(
    padding_mask: Tensor | None,
    batch: int,
    length: int,
    clone_batch: int,
    mask_prob: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniform random masks keeping exactly int(L * (1 - mask_prob)) tokens of each row of valid
    length L.

    Returns:
        (batch * clone_batch, length) bool, True at masked positions.
    """
    lengths = torch.tensor(_lengths(padding_mask, batch, length)).repeat_interleave(clone_batch)
    noise = torch.rand(batch * clone_batch, length, generator=generator)
    pos = torch.arange(length)
    noise = noise.masked_fill(pos[None, :] >= lengths[:, None], 2.0)  # padding sorts last
    rank = noise.argsort(1).argsort(1)  # rank of each position's noise within its row
    keep = (lengths.double() * (1.0 - mask_prob)).long()  # int(L * (1 - R)), as the reference
    return (rank >= keep[:, None]) & (pos[None, :] < lengths[:, None])


def draw_mask(cfg: MaskConfig, grid: tuple[int, ...], padding_mask: Tensor | None, batch: int,
              generator: torch.Generator | None = None) -> Tensor:
    """`cfg.clone_batch` masks per sample by `cfg.kind`: `block_mask` on `grid`, or `random_mask` over
    the sequence (grid (T,)). Returns (batch * clone_batch, prod(grid)) bool, True at masked positions."""
    if cfg.kind == "block":
        return block_mask(grid, padding_mask, batch, cfg.clone_batch, cfg.mask_prob, cfg.mask_length,
                          cfg.mask_prob_adjust, cfg.inverse, generator)
    return random_mask(padding_mask, batch, grid[0], cfg.clone_batch, cfg.mask_prob, generator)


def mask_info(mask: Tensor, padding_mask: Tensor | None = None) -> MaskInfo:
    """Visible-token indices for `mask` (B, T); padding (B, T) is never visible."""
    visible = ~mask if padding_mask is None else ~mask & ~padding_mask
    counts = visible.sum(1)
    fewest, k = torch.stack(counts.aminmax()).tolist() if counts.numel() else (0, 0)  # one device sync
    # stable sort puts visible positions first, each row in increasing position order
    ids = (~visible).to(torch.int8).argsort(dim=1, stable=True)[:, :k]  # (B, K)
    kept_padding = torch.arange(k, device=mask.device)[None, :] >= counts[:, None]
    return MaskInfo(mask, ids, kept_padding, fewest < k)


def gather_visible(x: Tensor, info: MaskInfo) -> Tensor:
    """(B, T, D) -> (B, K, D), the visible tokens."""
    return x.gather(1, info.ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_visible(visible: Tensor, info: MaskInfo, fill: Tensor) -> Tensor:
    """Put visible tokens (B, K, D) back at their positions in `fill` (B, T, D); rows' unused slots
    are ignored."""
    out = fill.clone()
    if not info.ragged:  # every slot is a visible token: one scatter, no boolean indexing
        return out.scatter_(1, info.ids_keep.unsqueeze(-1).expand(-1, -1, out.shape[-1]), visible.to(out.dtype))
    keep = ~info.kept_padding_mask
    rows = torch.arange(visible.shape[0], device=visible.device)[:, None].expand_as(info.ids_keep)
    out[rows[keep], info.ids_keep[keep]] = visible[keep].to(out.dtype)
    return out


def decoder_input(visible: Tensor, info: MaskInfo, noise_std: float) -> Tensor:
    """The decoder's input: visible tokens (B, K, D) back at their positions, N(0, noise_std^2) noise
    at the masked ones, zeros elsewhere (padding, which the decoder zeroes anyway). Noise is drawn
    (from the global generator) for the masked positions only, in row-major order.

    Returns:
        (B, T, D) in the dtype of `visible`.
    """
    B, T = info.mask.shape
    fill = visible.new_zeros(B, T, visible.shape[-1])
    n_masked = int(info.mask.sum())
    noise = torch.randn(n_masked, visible.shape[-1], device=visible.device, dtype=visible.dtype) * noise_std
    fill.masked_scatter_(info.mask.unsqueeze(-1), noise)
    return scatter_visible(visible, info, fill)
