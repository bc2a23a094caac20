"""Symmetric ALiBi attention bias with a learned per-head scale (data2vec 2.0 audio).

Press et al., "Train Short, Test Long" (2022) for the slopes; data2vec 2.0 uses -|i - j| * slope,
multiplied by a learned non-negative per-head scale shared by all layers.
"""

import math

import torch
from torch import Tensor, nn

__all__ = ["ALiBi", "alibi_slopes"]


def alibi_slopes(num_heads: int) -> list[float]:
    """The standard ALiBi slopes: a geometric series for a power of two heads; otherwise the set of
    the closest lower power of two plus every other slope of the next one."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_2(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_2(closest) + power_of_2(2 * closest)[0::2][: num_heads - closest]


class ALiBi(nn.Module):
    """Builds the additive bias for tokens at given (original, pre-masking) positions."""

    def __init__(self, num_heads: int):
        super().__init__()
        self.register_buffer("slopes", torch.tensor(alibi_slopes(num_heads)), persistent=False)
        self.alibi_scale = nn.Parameter(torch.ones(num_heads))

    def forward(self, positions: Tensor) -> Tensor:
        """Args: positions (B, T) or (T,) long. Returns: bias (B or 1, H, T, T)."""
        if positions.dim() == 1:
            positions = positions.unsqueeze(0)
        distance = (positions[:, None, :, None] - positions[:, None, None, :]).abs()  # (B, 1, T, T)
        slope = (self.slopes * self.alibi_scale.clamp(min=0)).to(torch.float32)
        return -distance.to(torch.float32) * slope[None, :, None, None]  # (B, H, T, T)
