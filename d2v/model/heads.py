"""Pooling and classification heads.

- `MeanPoolHead` (images, audio): mean over real tokens (CLS excluded), LayerNorm, Linear; the
  reference image fine-tuning head (`fc_norm` eps 1e-6, trunc-normal 0.02 init).
- `FirstTokenHead` (text): fairseq `RobertaClassificationHead` on the first token: dropout, dense,
  tanh, dropout, out_proj.
- `MeanLinearHead` (HF `Data2VecAudioForSequenceClassification`): mean over real tokens, an
  optional projector Linear, classifier Linear (no norm, no activation).
- `CTCHead` (speech recognition): dropout, then one Linear over every frame (xavier-uniform weight,
  zero bias, as fairseq's `Wav2VecCtc.proj`); per-frame emissions for a CTC decoder.
"""

import torch
from torch import Tensor, nn

from d2v.model.modality import Pooling

__all__ = ["CTCHead", "FirstTokenHead", "MeanLinearHead", "MeanPoolHead", "Pooling", "pool"]

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


class MeanLinearHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_extra_tokens: int, projection_dim: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        self.num_extra_tokens = num_extra_tokens
        self.projector = nn.Linear(dim, projection_dim) if projection_dim is not None else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(projection_dim or dim, num_classes)

    def forward(self, tokens: Tensor, padding_mask: Tensor | None, pre_logits: bool = False) -> Tensor:
        """(B, T, D) -> logits (B, C), or the projected pooled features (B, P) with pre_logits.

        Pooling before projecting equals HF's projecting every frame and then pooling (both linear)."""
        x = self.projector(pool(tokens, padding_mask, "mean", self.num_extra_tokens))
        return x if pre_logits else self.classifier(self.dropout(x))


class CTCHead(nn.Module):
    """Per-frame vocabulary logits. Padded frames read as certain blanks: 0 for the blank and
    `PADDING_LOGIT` for every other entry (fairseq writes -inf; a finite value keeps softmax, parity
    checks and fp16 free of inf - inf), so a greedy decoder skips them even without the mask."""

    PADDING_LOGIT = -1e4
    """exp(-1e4) underflows to 0 in every float dtype, and -1e4 is finite in float16 and bfloat16."""

    def __init__(self, dim: int, vocab_size: int, blank_id: int, dropout: float = 0.0):
        super().__init__()
        self.blank_id = blank_id
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, vocab_size)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        fill = torch.full((vocab_size,), self.PADDING_LOGIT)
        fill[blank_id] = 0.0
        self.register_buffer("padding_emission", fill, persistent=False)

    def forward(self, tokens: Tensor, padding_mask: Tensor | None, pre_logits: bool = False) -> Tensor:
        """(B, T, D) -> emissions (B, T, V) (unnormalized), or the frames (B, T, D) with pre_logits."""
        if pre_logits:
            return tokens
        x = self.proj(self.dropout(tokens))
        if padding_mask is not None:
            x = torch.where(padding_mask.unsqueeze(-1), self.padding_emission.to(x.dtype), x)
        return x
