"""PyTorch reference implementations of the ops that d2v fuses.

Each public op in `d2v.kernels` has exactly the signature of the function here. The reference path
is what runs on CPU, under ONNX export, and whenever the fused kernels are switched off; fused
kernels are tested against it.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["attention", "conv_block"]


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None = None,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Scaled dot-product attention with a key padding mask and an additive bias.

    Args:
        q, k, v: (B, H, T, Dh).
        key_padding_mask: (B, T) bool, True at padded keys; those keys get no weight.
        bias: additive logits bias broadcastable to (B, H, T, T), e.g. ALiBi.
        dropout_p: attention dropout (applied only when > 0).

    Returns:
        (B, H, T, Dh). Rows whose keys are all padding attend uniformly (finite, never NaN); their
        values are meaningless and callers ignore them.
    """
    mask = None if bias is None else bias.to(q.dtype)
    if key_padding_mask is not None:
        # masked_fill-style replacement (not addition) so a large bias cannot overflow to -inf.
        fill = torch.tensor(torch.finfo(q.dtype).min, dtype=q.dtype, device=q.device)
        base = mask if mask is not None else torch.zeros((), dtype=q.dtype, device=q.device)
        mask = torch.where(key_padding_mask[:, None, None, :], fill, base)  # (B, 1|H, 1|T, T)
    if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
        # Written out as MatMul/Softmax: SDPA's decomposition cannot reshape symbolic sequence
        # lengths in torch.export, and this is the form onnxruntime's CPU provider runs best.
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, T, T)
        if mask is not None:
            scores = scores + mask
        return scores.softmax(dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def conv_block(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding_mask: Tensor | None = None,
    groups: int = 1,
    residual: bool = False,
    eps: float = 1e-5,
) -> Tensor:
    """One conv-decoder layer: zero padding -> same-size conv -> LayerNorm over channels
    (no affine) -> GELU -> optional residual.

    Args:
        x: (B, C, T) for a 1-D weight (C_out, C/groups, K), or (B, C, H, W) for a 2-D weight.
        weight, bias: the convolution's parameters; "same" padding K//2, trimmed by one when K is even.
        padding_mask: (B, T) or (B, H, W) bool, True at padded positions; they are zeroed before the
            convolution so padding never leaks into real positions.
        groups: convolution groups.
        residual: add the (zeroed) input to the output; needs C_out == C.
        eps: LayerNorm epsilon.

    Returns:
        (B, C_out, T) or (B, C_out, H, W).
    """
    if padding_mask is not None:
        x = x.masked_fill(padding_mask.unsqueeze(1), 0.0)
    k = weight.shape[-1]
    if weight.dim() == 3:
        y = F.conv1d(x, weight, bias, padding=k // 2, groups=groups)
        if k % 2 == 0:
            y = y[..., :-1]
    else:
        y = F.conv2d(x, weight, bias, padding=k // 2, groups=groups)
        if k % 2 == 0:
            y = y[..., :-1, :-1]
    y = F.layer_norm(y.movedim(1, -1), (y.shape[1],), eps=eps).movedim(-1, 1)
    y = F.gelu(y)
    return y + x if residual else y
