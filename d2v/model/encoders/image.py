"""Image input encoder of data2vec 2.0: patch embedding, fixed 2-D sin-cos positions (added before
masking), a CLS token prepended after masking, then the context encoder.

Positions follow MAE's `get_2d_sincos_pos_embed` (He et al., 2021); no position for the CLS token.
"""

import torch
from torch import Tensor, nn

from d2v.model.encoders.context import ContextEncoder, Tokens
from d2v.model.masking import MaskInfo, gather_visible
from d2v.model.modality import HAS_CLS_TOKEN, NUM_EXTRA_TOKENS

__all__ = ["ImageEncoder", "PatchEmbed", "sincos_2d"]


def sincos_2d(embed_dim: int, grid_size: int) -> Tensor:
    """Fixed 2-D sin-cos positions: (grid_size**2, embed_dim), half the channels per axis."""
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos positions need embed_dim divisible by 4, got {embed_dim}")
    pos = torch.arange(grid_size, dtype=torch.float64)
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim / 4))

    def axis(p: Tensor) -> Tensor:  # (N,) -> (N, D/2)
        out = p[:, None] * omega[None, :]
        return torch.cat([out.sin(), out.cos()], dim=1)

    gw, gh = torch.meshgrid(pos, pos, indexing="xy")  # MAE: first half encodes w, second h
    emb = torch.cat([axis(gw.reshape(-1)), axis(gh.reshape(-1))], dim=1)
    return emb.float()


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: (B, C, H, W) -> (B, N, D)."""

    def __init__(self, image_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size = image_size
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        w = self.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # the bias keeps PyTorch's default, as the reference

    def forward(self, x: Tensor) -> Tensor:
        want = (self.in_chans, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"expected images of shape (B, {want[0]}, {want[1]}, {want[2]}), got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class ImageEncoder(nn.Module):
    num_extra_tokens = NUM_EXTRA_TOKENS["image"]
    has_cls_token = HAS_CLS_TOKEN["image"]

    def __init__(self, image_size: int, patch_size: int, in_chans: int, embed_dim: int, context_encoder: ContextEncoder,
                 stored_pos_embed: bool = False):
        """stored_pos_embed: the (1, N, D) position table is part of the state dict (loaded, e.g. a
        fairseq checkpoint's fp16-stored table) instead of only computed here."""
        super().__init__()
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.local_encoder = PatchEmbed(image_size, patch_size, in_chans, embed_dim)
        self.register_buffer("pos_embed", sincos_2d(embed_dim, self.grid[0])[None], persistent=stored_pos_embed)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))  # reference: N(0, 1)
        self.context_encoder = context_encoder

    def mask_grid(self, length: int) -> tuple[int, ...]:
        return self.grid

    def local_features(self, x: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, C, H, W) -> patch features with positions (B, N, D); images have no padding."""
        return self.local_encoder(x) + self.pos_embed.to(x.dtype), None

    def contextualize(self, features: Tensor, padding_mask: Tensor | None, info: MaskInfo | None = None) -> Tokens:
        """Drop masked patches, prepend the CLS token, run the context encoder."""
        if info is not None:
            features = gather_visible(features, info)  # (B, K, D)
            padding_mask = info.kept_padding_mask if info.ragged else None
        cls = self.cls_token.expand(features.shape[0], -1, -1).to(features.dtype)
        x = torch.cat([cls, features], dim=1)  # (B, 1+N, D)
        if padding_mask is not None:
            padding_mask = torch.cat([padding_mask.new_zeros(padding_mask.shape[0], 1), padding_mask], dim=1)
        return self.context_encoder(Tokens(x, padding_mask, None))

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tokens:
        return self.contextualize(*self.local_features(x, padding_mask))
