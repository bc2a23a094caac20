"""The light convolutional decoder of data2vec 2.0 (fairseq `Decoder1d` / `Decoder2d`).

Each layer: conv ("same", grouped) -> LayerNorm over channels without affine -> GELU, plus the
layer input when `residual` and the widths match (so not for the first layer when the decoder is
narrower than the encoder). Then a projection back to the encoder width. Images run 2-D
convolutions on the patch grid; audio and text 1-D convolutions over time. Padded positions are
zeroed before every convolution (inside `kernels.conv_block`).
"""

from torch import Tensor, nn

from d2v import kernels

__all__ = ["ConvDecoder"]


class ConvDecoder(nn.Module):
    def __init__(
        self,
        in_dim: int,
        dim: int,
        kernel: int,
        layers: int,
        groups: int,
        residual: bool,
        out_dim: int,
        projection_layers: int = 1,
        projection_ratio: float = 2.0,
        grid: tuple[int, int] | None = None,
    ):
        """Args: grid is the (H, W) patch grid for a 2-D decoder, None for 1-D sequences."""
        super().__init__()
        conv = nn.Conv1d if grid is None else nn.Conv2d
        self.grid = grid
        self.convs = nn.ModuleList(
            conv(in_dim if i == 0 else dim, dim, kernel, padding=kernel // 2, groups=groups) for i in range(layers)
        )
        self.residual = [residual and (i > 0 or in_dim == dim) for i in range(layers)]
        if projection_layers == 1:
            self.proj = nn.Linear(dim, out_dim)
        else:
            hidden = int(dim * projection_ratio)
            self.proj = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x (B, T, D) with noise at masked positions, padding_mask (B, T) -> predictions (B, T, out_dim)."""
        B, _, D = x.shape
        x = x.transpose(1, 2)  # (B, D, T)
        if self.grid is not None:
            x = x.reshape(B, D, *self.grid)  # (B, D, H, W)
        for conv, residual in zip(self.convs, self.residual, strict=True):
            x = kernels.conv_block(x, conv.weight, conv.bias, padding_mask, conv.groups, residual)
        x = x.flatten(2).transpose(1, 2)  # (B, T, dim)
        return self.proj(x)
