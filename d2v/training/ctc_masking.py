"""Fine-tuning's masking of the speech features (wav2vec 2.0, Baevski et al. 2020, section 3.1 and
4.3; data2vec 2.0 keeps it for speech recognition), applied to the projected local features
(B, T, D) before the positional convolutions, in training only.

- Time masking: each clip of `n` real frames gets `int(mask_prob * n / mask_length + u)` spans
  (u ~ U[0, 1): probabilistic rounding; at least one when mask_prob > 0) of `mask_length` frames,
  starting at distinct frames drawn uniformly from [0, n - mask_length); spans may overlap, so the
  masked fraction is below mask_prob (about 1 - exp(-mask_prob) for long clips). The masked frames
  are replaced by N(0, noise_std) noise - not removed, not zeroed: the Transformer sees every frame,
  as at inference.
- Channel masking: the same draw over the D feature channels (spans of `mask_channel_length`, no
  minimum), each clip its own; the chosen channels are zeroed at every frame of the clip.

Padding frames are never chosen. fairseq's `compute_mask_indices` draws the same way; its
`require_same_masks` (every row trimmed to the batch's smallest count) only matters when masked
frames are removed, so it is left out. Every draw comes from the numpy Generator passed in, which
the training loop seeds per (seed, step, micro-batch, process).
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["CTCMasking", "apply_ctc_masks", "span_mask"]


@dataclass(frozen=True)
class CTCMasking:
    """The masking settings of a fine-tuning run (reference values)."""

    mask_prob: float = 0.5
    mask_length: int = 10
    noise_std: float = 0.01
    mask_channel_prob: float = 0.25
    mask_channel_length: int = 64


def span_mask(lengths: list[int], size: int, prob: float, span: int, rng: np.random.Generator,
              min_spans: int = 0) -> np.ndarray:
    """Random spans over the first `lengths[b]` of `size` positions of each row.

    Args:
        lengths: (B,) real positions per row.
        prob: expected share of positions that start-and-cover spans, before overlaps (mask_prob).
        span: positions per span.
        min_spans: at least this many spans per row when prob > 0.

    Returns:
        (B, size) bool, True where masked; positions at or past a row's length are never set.
    """
    mask = np.zeros((len(lengths), size), dtype=bool)
    if prob <= 0:
        return mask
    for b, n in enumerate(lengths):
        if n <= 0:
            continue
        count = max(int(prob * n / span + rng.random()), min_spans)
        starts_from = max(n - span, 1)
        count = min(count, starts_from)
        for start in rng.choice(starts_from, count, replace=False):
            mask[b, start:min(start + span, n)] = True
    return mask


def apply_ctc_masks(x: Tensor, padding_mask: Tensor | None, masking: CTCMasking,
                    rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Time-mask (noise) then channel-mask (zeros) the features.

    Args:
        x: (B, T, D) projected local features.
        padding_mask: (B, T) True at padded frames, or None.

    Returns:
        The masked features (B, T, D) (a new tensor), the time mask (B, T) and the channel mask (B, D),
        both bool, True where masked.
    """
    B, T, D = x.shape
    lengths = [T] * B if padding_mask is None else (~padding_mask).sum(1).tolist()
    time = torch.from_numpy(span_mask(lengths, T, masking.mask_prob, masking.mask_length, rng, min_spans=1))
    channels = torch.from_numpy(span_mask([D] * B, D, masking.mask_channel_prob, masking.mask_channel_length, rng))
    time, channels = time.to(x.device), channels.to(x.device)
    if time.any():
        noise = rng.normal(0.0, masking.noise_std, size=(int(time.sum()), D)).astype(np.float32)
        x = x.clone()
        x[time] = torch.from_numpy(noise).to(x.device, x.dtype)
    if channels.any():
        x = x.masked_fill(channels.unsqueeze(1), 0.0)
    return x, time, channels
