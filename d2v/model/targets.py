"""Contextualized targets of data2vec 2.0 (fairseq `make_targets`): the teacher's FFN outputs of the
top K shared blocks, each normalized over time (instance norm), averaged in fp32, then optionally
normalized again. Padded positions are excluded from every statistic and are 0 in the result.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from d2v.model.config import TargetConfig

__all__ = ["instance_norm", "make_targets", "targets_from_config"]


def instance_norm(x: Tensor, padding_mask: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize each channel of each sample over its real time steps (biased variance, no affine).

    Args: x (B, T, D); padding_mask (B, T). Returns: (B, T, D) float32, 0 at padding."""
    x = x.float()
    if padding_mask is None:
        return F.instance_norm(x.transpose(1, 2), eps=eps).transpose(1, 2)
    valid = (~padding_mask).unsqueeze(-1).float()  # (B, T, 1)
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(1, keepdim=True) / n
    var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (x - mean) * torch.rsqrt(var + eps) * valid


def make_targets(
    layer_outputs: list[Tensor],
    padding_mask: Tensor | None,
    top_k: int,
    instance_norm_target_layer: bool = True,
    layer_norm_target_layer: bool = False,
    layer_norm_targets: bool = False,
    instance_norm_targets: bool = False,
) -> Tensor:
    """Args:
        layer_outputs: the shared blocks' FFN outputs, bottom to top, each (B, T, D), extra tokens
            already removed.
        padding_mask: (B, T) True at padding.
        top_k: how many of the top layers to average.

    Returns:
        (B, T, D) float32 targets.
    """
    if top_k > len(layer_outputs):
        raise ValueError(f"top_k={top_k} but the teacher produced {len(layer_outputs)} layers")
    total = None
    for t in layer_outputs[-top_k:]:
        t = t.float()
        if instance_norm_target_layer:
            t = instance_norm(t, padding_mask)
        if layer_norm_target_layer:
            t = F.layer_norm(t, t.shape[-1:])
        total = t if total is None else total + t
    y = total / top_k
    if layer_norm_targets:
        y = F.layer_norm(y, y.shape[-1:])
    if instance_norm_targets:
        y = instance_norm(y, padding_mask)
    if padding_mask is not None:
        y = y.masked_fill(padding_mask.unsqueeze(-1), 0.0)
    return y


def targets_from_config(layer_outputs: list[Tensor], padding_mask: Tensor | None, cfg: TargetConfig) -> Tensor:
    """`make_targets` with the settings of a `TargetConfig`."""
    return make_targets(layer_outputs, padding_mask, cfg.top_k, cfg.instance_norm_target_layer,
                        cfg.layer_norm_target_layer, cfg.layer_norm_targets, cfg.instance_norm_targets)
