"""Text input encoder of data2vec 2.0 (RoBERTa-style): token embedding without sqrt(D) scaling,
learned positions with the fairseq/RoBERTa offset (positions start at pad_id + 1), embedding
LayerNorm and dropout. The context encoder has no LayerNorm and no blocks in the reference.
"""

import torch
from torch import Tensor, nn

from d2v.model.encoders.context import ContextEncoder, Tokens
from d2v.model.masking import MaskInfo, gather_visible
from d2v.model.modality import HAS_CLS_TOKEN, NUM_EXTRA_TOKENS

__all__ = ["TextEmbedding", "TextEncoder"]


class TextEmbedding(nn.Module):
    def __init__(self, vocab_size: int, max_positions: int, pad_id: int, embed_dim: int, eps: float, dropout: float):
        super().__init__()
        self.pad_id = pad_id
        self.max_positions = max_positions
        self.embed_tokens = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.embed_positions = nn.Embedding(max_positions + pad_id + 1, embed_dim, padding_idx=pad_id)
        self.layernorm = nn.LayerNorm(embed_dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, padding_mask: Tensor) -> Tensor:
        """tokens (B, T) long, padding_mask (B, T) -> (B, T, D)."""
        valid = (~padding_mask).long()
        positions = torch.cumsum(valid, dim=1) * valid + self.pad_id  # padding -> pad_id
        x = self.embed_tokens(tokens) + self.embed_positions(positions)
        return self.dropout(self.layernorm(x))


class TextEncoder(nn.Module):
    num_extra_tokens = NUM_EXTRA_TOKENS["text"]
    has_cls_token = HAS_CLS_TOKEN["text"]
    grid = None  # tokens form a 1-D sequence

    def __init__(self, local_encoder: TextEmbedding, context_encoder: ContextEncoder):
        super().__init__()
        self.local_encoder = local_encoder
        self.context_encoder = context_encoder

    def mask_grid(self, length: int) -> tuple[int, ...]:
        return (length,)

    def local_features(self, tokens: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """tokens (B, T) long; padding_mask (B, T) defaults to tokens == pad_id."""
        if tokens.dim() != 2 or tokens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"expected token ids of shape (B, T) and integer dtype, got {tuple(tokens.shape)} {tokens.dtype}")
        limit = self.local_encoder.max_positions
        if tokens.shape[1] > limit:
            raise ValueError(f"{tokens.shape[1]} tokens exceed the model's limit of {limit}")
        vocab = self.local_encoder.embed_tokens.num_embeddings
        exporting = torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()  # no data-dependent checks
        if not exporting and tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise ValueError(f"token ids must lie in [0, {vocab})")
        if padding_mask is None:
            padding_mask = tokens.eq(self.local_encoder.pad_id)
        return self.local_encoder(tokens, padding_mask), padding_mask

    def contextualize(self, features: Tensor, padding_mask: Tensor | None, info: MaskInfo | None = None) -> Tokens:
        if info is not None:
            features, padding_mask = gather_visible(features, info), info.kept_padding_mask if info.ragged else None
        return self.context_encoder(Tokens(features, padding_mask, None))

    def forward(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tokens:
        return self.contextualize(*self.local_features(tokens, padding_mask))
