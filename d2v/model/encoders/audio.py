"""Speech input encoder of data2vec 2.0: per-utterance waveform normalization, the wav2vec 2.0
convolutional feature extractor (layer-norm mode, stride 320), feature projection, a grouped
convolutional positional encoder, and ALiBi with a learned per-head scale.

Baevski et al., wav2vec 2.0 (2020) for the extractor; data2vec 2.0 (2022) for the rest. Padding
never reaches real frames: frame lengths follow every stride, and padded frames are zeroed before
each positional convolution.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from d2v.model.alibi import ALiBi
from d2v.model.encoders.context import ContextEncoder, Tokens
from d2v.model.masking import MaskInfo, gather_visible
from d2v.model.modality import HAS_CLS_TOKEN, NUM_EXTRA_TOKENS, conv_frames

__all__ = ["AudioEncoder", "AudioLocalEncoder", "FeatureExtractor", "PositionalConv", "normalize_waveform"]


def normalize_waveform(wav: Tensor, padding_mask: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per utterance over its real samples; padding stays 0.

    Args: wav (B, L); padding_mask (B, L) True at padding. Returns: (B, L) float32."""
    # one formula with or without padding, statistics in float64, so that a clip gives the same
    # result alone and inside a padded batch
    x = wav.double()
    valid = torch.ones_like(x) if padding_mask is None else (~padding_mask).double()
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(1, keepdim=True) / n
    var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return ((x - mean) * torch.rsqrt(var + eps) * valid).float()


class ExtractorLayer(nn.Module):
    """Conv1d -> LayerNorm over channels (affine, fp32) -> GELU."""

    def __init__(self, in_dim: int, dim: int, kernel: int, stride: int, bias: bool):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, dim, kernel, stride=stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C', T')
        x = self.conv(x).transpose(1, 2)
        x = F.layer_norm(x.float(), x.shape[-1:], self.norm.weight.float(), self.norm.bias.float(), self.norm.eps)
        return F.gelu(x.to(self.conv.weight.dtype)).transpose(1, 2)


class FeatureExtractor(nn.Module):
    """Waveform (B, L) -> frames (B, T, C)."""

    def __init__(self, conv_layers: list[list[int]], bias: bool = False):
        super().__init__()
        dims = [1] + [c for c, _, _ in conv_layers]
        self.layers = nn.ModuleList(
            ExtractorLayer(dims[i], c, k, s, bias) for i, (c, k, s) in enumerate(conv_layers)
        )
        self.conv_layers = [list(layer) for layer in conv_layers]
        self.out_dim = dims[-1]

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames produced from `lengths` samples (`d2v.model.modality.conv_frames`)."""
        return conv_frames(lengths, self.conv_layers)

    def forward(self, wav: Tensor) -> Tensor:
        x = wav.unsqueeze(1)  # (B, 1, L)
        for layer in self.layers:
            x = layer(x)
        return x.transpose(1, 2)  # (B, T, C)


class AudioLocalEncoder(nn.Module):
    """Feature extractor, then `project_features`: LayerNorm and Linear to the model width."""

    def __init__(self, conv_layers: list[list[int]], conv_bias: bool, embed_dim: int):
        super().__init__()
        self.extractor = FeatureExtractor(conv_layers, conv_bias)
        self.norm = nn.LayerNorm(self.extractor.out_dim)
        self.proj = nn.Linear(self.extractor.out_dim, embed_dim)

    def forward(self, wav: Tensor, padding_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """wav (B, L), padding_mask (B, L) -> features (B, T, D), frame padding mask (B, T)."""
        x = self.proj(self.norm(self.extractor(wav)))
        if padding_mask is None:
            return x, None
        lengths = self.extractor.output_lengths((~padding_mask).sum(1))
        frame_mask = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
        return x, frame_mask


class PositionalConv(nn.Module):
    """`depth` x [grouped Conv1d ("same"), LayerNorm without affine, GELU], no inner residual;
    padded frames are zeroed before every convolution."""

    def __init__(self, dim: int, depth: int, kernel: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups) for _ in range(depth)
        )
        self.trim = 1 if kernel % 2 == 0 else 0
        self.eps = eps

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        x = x.transpose(1, 2)  # (B, D, T)
        for conv in self.layers:
            if padding_mask is not None:
                x = x.masked_fill(padding_mask.unsqueeze(1), 0.0)
            x = conv(x)
            if self.trim:
                x = x[..., : -self.trim]
            x = F.gelu(F.layer_norm(x.transpose(1, 2), x.shape[1:2], eps=self.eps).transpose(1, 2))
        return x.transpose(1, 2)


class AudioEncoder(nn.Module):
    num_extra_tokens = NUM_EXTRA_TOKENS["audio"]
    has_cls_token = HAS_CLS_TOKEN["audio"]
    grid = None  # tokens form a 1-D sequence

    def __init__(
        self,
        local_encoder: AudioLocalEncoder,
        positional_encoder: PositionalConv,
        alibi: ALiBi | None,
        context_encoder: ContextEncoder,
        normalize: bool = True,
    ):
        super().__init__()
        self.local_encoder = local_encoder
        self.positional_encoder = positional_encoder
        self.alibi = alibi
        self.context_encoder = context_encoder
        self.normalize = normalize

    def mask_grid(self, length: int) -> tuple[int, ...]:
        return (length,)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.local_encoder.extractor.output_lengths(lengths)

    def local_features(self, wav: Tensor, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Waveform (B, L) float, padding_mask (B, L) -> (B, T, D) features, (B, T) frame mask."""
        if wav.dim() != 2:
            raise ValueError(f"expected waveforms of shape (B, samples), got {tuple(wav.shape)}")
        if self.normalize:
            wav = normalize_waveform(wav, padding_mask).to(self.local_encoder.proj.weight.dtype)
        elif padding_mask is not None:
            wav = wav.masked_fill(padding_mask, 0.0)
        return self.local_encoder(wav, padding_mask)

    def contextualize(self, features: Tensor, padding_mask: Tensor | None, info: MaskInfo | None = None) -> Tokens:
        """Conv positions on the zero-masked full sequence, then keep the visible frames (with their
        original positions for ALiBi) and run the context encoder."""
        masked = features if info is None else features.masked_fill(info.mask.unsqueeze(-1), 0.0)
        x = features + self.positional_encoder(masked, padding_mask)
        positions = torch.arange(x.shape[1], device=x.device)
        if info is not None:
            x = gather_visible(x, info)  # (B, K, D)
            padding_mask, positions = info.kept_padding_mask if info.ragged else None, info.ids_keep
        bias = self.alibi(positions) if self.alibi is not None else None
        return self.context_encoder(Tokens(x, padding_mask, bias))

    def forward(self, wav: Tensor, padding_mask: Tensor | None = None) -> Tokens:
        return self.contextualize(*self.local_features(wav, padding_mask))
