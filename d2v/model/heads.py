"""Pooling and classification heads.

- `MeanPoolHead` (images, audio): mean over real tokens (CLS excluded), LayerNorm, Linear; the
  reference image fine-tuning head (`fc_norm` eps 1e-6, trunc-normal 0.02 init).
- `FirstTokenHead` (text): fairseq `RobertaClassificationHead` on the first token: dropout, dense,
  tanh, dropout, out_proj.
"""

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["FirstTokenHead", "MeanPoolHead", "Pooling", "pool"]

Pooling = Literal["mean", "cls"]


def pool(tokens: Tensor, padding_mask: Tensor | None, pooling: Pooling, num_extra_tokens: int) -> Tensor:
    """(B, T, D) -> (B, D). "mean": average of real, non-extra tokens; "cls": the first token."""
    if pooling == "cls":
        return tokens[:, 0]
    if pooling != "mean":
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    x = tokens[:, num_extra_tokens:]
    if padding_mask is None:
        return x.mean(1)
    valid = ~padding_mask[:, num_extra_tokens:]
    x = x.masked_fill(~valid.unsqueeze(-1), 0.0)  # masked_fill, not multiply: padding may hold inf
    return x.sum(1) / valid.sum(1, keepdim=True).clamp(min=1).to(x.dtype)


class MeanPoolHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_extra_tokens: int, eps: float = 1e-6, dropout: float = 0.0):
        super().__init__()
        self.num_extra_tokens = num_extra_tokens
        self.fc_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, tokens: Tensor, padding_mask: Tensor | None, pre_logits: bool = False) -> Tensor:
        """(B, T, D) -> logits (B, C), or the normalized pooled features (B, D) with pre_logits."""
        x = self.fc_norm(pool(tokens, padding_mask, "mean", self.num_extra_tokens))
        return x if pre_logits else self.fc(self.dropout(x))


class FirstTokenHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor, padding_mask: Tensor | None, pre_logits: bool = False) -> Tensor:
        """(B, T, D) -> logits (B, C), or the tanh features (B, D) with pre_logits."""
        x = torch.tanh(self.dense(self.dropout(tokens[:, 0])))
        return x if pre_logits else self.out_proj(self.dropout(x))
