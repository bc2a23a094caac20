"""The post-LN Transformer block of data2vec 2.0 (fairseq `AltBlock` / `AltAttention`).

    x = x + drop_path(attn(x))
    r = x = norm1(x)
    t = mlp(r)                       # the block's target: the FFN output before the residual
    x = norm2(r + drop_path(post_mlp_dropout(t)))

Baevski et al., "Efficient Self-supervised Learning with Contextualized Target Representations for
Vision, Speech and Language" (2022), section 2.
"""

import torch
from torch import Tensor, nn

from d2v import kernels

__all__ = ["Attention", "Block", "DropPath", "Mlp", "bert_init_"]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (with bias), a key padding mask and an
    optional additive bias (ALiBi)."""

    def __init__(self, dim: int, num_heads: int, attention_dropout: float = 0.0, proj_dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.attention_dropout = attention_dropout
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """Args: x (B, T, D); padding_mask (B, T) True at padding; bias broadcastable to (B, H, T, T).
        Returns: (B, T, D)."""
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, T, Dh)
        dropout_p = self.attention_dropout if self.training else 0.0
        x = kernels.attention(q, k, v, key_padding_mask=padding_mask, bias=bias, dropout_p=dropout_p)
        x = x.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2."""

    def __init__(self, dim: int, hidden_dim: int, activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(activation_dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability p."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class Block(nn.Module):
    """Post-LN Transformer block; returns the new states and the FFN output used as its target."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        post_mlp_dropout: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.attn = Attention(dim, num_heads, attention_dropout, dropout)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), activation_dropout)
        self.post_mlp_dropout = nn.Dropout(post_mlp_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Args: x (B, T, D); padding_mask (B, T); bias broadcastable to (B, H, T, T).
        Returns: x (B, T, D) and the FFN output t (B, T, D)."""
        x = self.norm1(x + self.drop_path(self.attn(x, padding_mask, bias)))
        t = self.mlp(x)
        x = self.norm2(x + self.drop_path(self.post_mlp_dropout(t)))
        return x, t


def bert_init_(module: nn.Module) -> None:
    """fairseq `init_bert_params`: Linear and Embedding N(0, 0.02), biases 0, padding row 0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
