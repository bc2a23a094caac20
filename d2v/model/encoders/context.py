"""What every modality encoder shares: the `Tokens` it hands to the Transformer and the context
encoder (fairseq `BlockEncoder`: embedding LayerNorm, dropout, then modality-specific blocks)."""

from typing import NamedTuple

from torch import Tensor, nn

from d2v.model.transformer import Block

__all__ = ["ContextEncoder", "Tokens"]


class Tokens(NamedTuple):
    """Input to the shared Transformer blocks."""

    x: Tensor
    """(B, T, D) token states, extra (CLS) tokens first."""
    padding_mask: Tensor | None
    """(B, T) bool, True at padding."""
    bias: Tensor | None
    """Additive attention bias broadcastable to (B, H, T, T) (ALiBi), or None."""


class ContextEncoder(nn.Module):
    """norm -> dropout -> prenet blocks. `norm` is nn.Identity where the reference has none (text)."""

    def __init__(self, norm: nn.Module, dropout: float, blocks: list[Block]):
        super().__init__()
        self.norm = norm
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, tokens: Tokens) -> Tokens:
        x = self.dropout(self.norm(tokens.x))
        for blk in self.blocks:
            x, _ = blk(x, tokens.padding_mask, tokens.bias)
        return Tokens(x, tokens.padding_mask, tokens.bias)
