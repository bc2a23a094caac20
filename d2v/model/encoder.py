"""The encoder that inference uses: one modality input encoder, the shared Transformer blocks, and
an optional classification head. Its verbs map onto the HTTP API: `forward_features` serves
/embed, `forward_head` serves /classify.
"""

from typing import cast

import torch
from torch import Tensor, nn

from d2v.model.encoders.context import InputEncoder, Tokens
from d2v.model.heads import Pooling, pool
from d2v.model.transformer import Block

__all__ = ["Data2VecEncoder"]


class Data2VecEncoder(nn.Module):
    def __init__(self, modality: str, input_encoder: InputEncoder, blocks: list[Block], layerdrop: float = 0.0,
                 head: nn.Module | None = None):
        super().__init__()
        self.modality = modality
        self.encoders = nn.ModuleDict({modality: cast(nn.Module, input_encoder)})
        self.blocks = nn.ModuleList(blocks)
        self.layerdrop = layerdrop
        self.head = head

    @property
    def input_encoder(self) -> InputEncoder:
        return cast(InputEncoder, self.encoders[self.modality])

    @property
    def num_extra_tokens(self) -> int:
        return self.input_encoder.num_extra_tokens

    def forward_layers(self, tokens: Tokens) -> tuple[Tensor, list[Tensor]]:
        """Run the shared blocks. Returns the output (B, T, D) and each block's FFN output (B, T, D);
        a block skipped by layerdrop contributes nothing."""
        x, targets = tokens.x, []
        for blk in self.blocks:
            if self.training and self.layerdrop > 0 and float(torch.rand(())) < self.layerdrop:
                continue
            x, t = blk(x, tokens.padding_mask, tokens.bias)
            targets.append(t)
        return x, targets

    def forward_features(self, x: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Raw input -> token states (B, T, D) (extra tokens first, padding zeroed) and the token
        padding mask (B, T) or None."""
        tokens = self.input_encoder(x, padding_mask)
        out, _ = self.forward_layers(tokens)
        if tokens.padding_mask is not None:
            out = out.masked_fill(tokens.padding_mask.unsqueeze(-1), 0.0)
        return out, tokens.padding_mask

    def pool(self, tokens: Tensor, padding_mask: Tensor | None, pooling: Pooling = "mean") -> Tensor:
        """(B, T, D) -> (B, D) embeddings."""
        if pooling == "cls" and not self.input_encoder.has_cls_token:
            raise ValueError(f"{self.modality} models have no CLS token; use mean pooling")
        return pool(tokens, padding_mask, pooling, self.num_extra_tokens)

    def forward_head(self, tokens: Tensor, padding_mask: Tensor | None = None, pre_logits: bool = False) -> Tensor:
        """Token states (B, T, D) -> logits (B, C), or the head's pooled features with pre_logits.

        A CTC head returns per-frame emissions (B, T, V) instead (padded frames: 0 for the blank,
        -1e4 elsewhere), and the frames themselves with pre_logits."""
        if self.head is None:
            raise ValueError("this model has no classification head")
        return self.head(tokens, padding_mask, pre_logits)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Raw input -> logits (B, C), or emissions (B, T, V) for a CTC head."""
        return self.forward_head(*self.forward_features(x, padding_mask))
