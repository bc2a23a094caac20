"""What every modality encoder shares: the `InputEncoder` contract, the `Tokens` it hands to the
Transformer and the context encoder (fairseq `BlockEncoder`: embedding LayerNorm, dropout, then
modality-specific blocks)."""

from typing import NamedTuple, Protocol, runtime_checkable

from torch import Tensor, nn

from d2v.model.masking import MaskInfo
from d2v.model.transformer import Block

__all__ = ["ContextEncoder", "InputEncoder", "Tokens"]


class Tokens(NamedTuple):
    """Input to the shared Transformer blocks."""

    x: Tensor
    """(B, T, D) token states, extra (CLS) tokens first."""
    padding_mask: Tensor | None
    """(B, T) bool, True at padding."""
    bias: Tensor | None
    """Additive attention bias broadcastable to (B, H, T, T) (ALiBi), or None."""


@runtime_checkable
class InputEncoder(Protocol):
    """What the shared encoder, pretraining and export need from a modality's input encoder
    (`ImageEncoder`, `AudioEncoder`, `TextEncoder`). `forward` is `contextualize(*local_features(...))`;
    pretraining splits the two so the local features are computed once and contextualized per
    masked copy."""

    num_extra_tokens: int
    """Tokens prepended before the real ones (`d2v.model.modality.NUM_EXTRA_TOKENS`)."""
    has_cls_token: bool
    """Whether the first token may be pooled as CLS (`d2v.model.modality.HAS_CLS_TOKEN`)."""
    grid: tuple[int, int] | None
    """The 2-D token grid (images), or None for a 1-D sequence."""

    def local_features(self, x: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Raw input (and its padding mask) -> local features (B, T, D) and the token padding mask (B, T)."""
        ...

    def contextualize(self, features: Tensor, padding_mask: Tensor | None, info: MaskInfo | None = None) -> Tokens:
        """Local features -> `Tokens` for the shared blocks: extra tokens first; with `info`, only the
        visible tokens."""
        ...

    def mask_grid(self, length: int) -> tuple[int, ...]:
        """The grid masks are drawn on for `length` tokens: (length,) or (H, W)."""
        ...

    def __call__(self, x: Tensor, padding_mask: Tensor | None = None) -> Tokens: ...


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
