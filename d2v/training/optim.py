"""AdamW parameter groups and the learning-rate schedule, as the reference.

- No weight decay on parameters that are 1-D, named `*.bias`, or the ALiBi scale (the reference's
  rule, which covers every norm).
- Layer-wise learning-rate decay (fine-tuning): the Transformer blocks, context-encoder (prenet)
  blocks first and shared blocks after, in order, get scale `layer_decay ** (N - i)` for block
  i = 0 .. N-1, so even the top block is scaled once; everything else (local encoder, CLS token,
  norms outside blocks, head) keeps scale 1.
- Cosine schedule with linear warmup: lr(s) = peak * (s + 1) / warmup during warmup, then a cosine
  from peak to min_lr at the last update.
- Tri-stage schedule (speech recognition, fairseq `tri_stage`): the updates are split by
  `phase_ratio` into a linear warmup from `init_scale * peak` to the peak, a hold at the peak, and an
  exponential decay to `final_scale * peak`, which is kept after the last update.
"""

import math
import re

from torch import nn

__all__ = ["block_index", "cosine_lr", "no_weight_decay", "param_groups", "set_lr", "tri_stage_lr"]

_BLOCK = re.compile(r"(?:^|\.)(context_encoder\.blocks|(?<!context_encoder\.)blocks)\.(\d+)\.")


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """The reference's rule: 1-D parameters (norms, biases, scales), `*.bias`, and `alibi_scale`."""
    return param.ndim <= 1 or name.endswith(".bias") or "alibi_scale" in name


def block_index(name: str, prenet_depth: int) -> int | None:
    """Position of the block owning `name` among prenet + shared blocks, or None outside blocks."""
    m = _BLOCK.search(name)
    if m is None:
        return None
    i = int(m.group(2))
    return i if m.group(1).startswith("context_encoder") else prenet_depth + i


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    prenet_depth: int = 0,
    num_blocks: int = 0,
) -> list[dict]:
    """AdamW groups keyed by (decay or not, lr scale); each group carries "lr_scale" for `set_lr`.

    Args:
        model: names are matched as `...context_encoder.blocks.<i>.` (prenet) and `...blocks.<i>.`.
        layer_decay: 1.0 turns layer-wise decay off.
        prenet_depth, num_blocks: the encoder's prenet depth and total block count N.
    """
    groups: dict[tuple[bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not no_weight_decay(name, p)
        scale = 1.0
        i = block_index(name, prenet_depth) if layer_decay != 1.0 else None
        if i is not None:
            scale = layer_decay ** (num_blocks - i)
        key = (decay, scale)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "weight_decay": weight_decay if decay else 0.0,
                           "lr_scale": scale}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def cosine_lr(step: int, peak: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Learning rate of update `step` (0-based) of `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def tri_stage_lr(step: int, peak: float, total: int, phase_ratio: tuple[float, float, float] = (0.1, 0.4, 0.5),
                 final_scale: float = 0.05, init_scale: float = 0.01) -> float:
    """Learning rate of update `step` (0-based) of `total` under fairseq's tri-stage schedule.

    Args:
        phase_ratio: fractions of `total` for warmup, hold and decay (each stage's length is
            int(fraction * total), as the reference rounds it).
        final_scale, init_scale: lr at the end of the decay, and at step 0, as fractions of `peak`.
    """
    warmup, hold, decay = (int(r * total) for r in phase_ratio)
    if step < warmup:
        return peak * init_scale + (peak - peak * init_scale) / warmup * step
    step -= warmup
    if step < hold:
        return peak
    step -= hold
    if step <= decay and decay > 0:
        return peak * math.exp(math.log(final_scale) / decay * step)
    return peak * final_scale


def set_lr(optimizer, lr: float) -> None:
    """Set every group's lr to `lr` times its "lr_scale"."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
