"""Optimizer groups (no decay on biases, norms and the ALiBi scale), layer-wise lr decay factors,
the cosine-with-warmup schedule and the tri-stage schedule of speech recognition."""

import itertools
import math

import pytest
import torch
from realdata import tiny_config

from d2v.model import HeadConfig, build_data2vec, build_encoder
from d2v.training.optim import block_index, cosine_lr, param_groups, set_lr, tri_stage_lr


def test_schedule_math():
    peak, warmup, total = 1e-3, 10, 110
    assert cosine_lr(0, peak, warmup, total) == pytest.approx(peak / 10)
    assert cosine_lr(4, peak, warmup, total) == pytest.approx(peak / 2)
    assert cosine_lr(9, peak, warmup, total) == pytest.approx(peak)
    assert cosine_lr(10, peak, warmup, total) == pytest.approx(peak)  # cosine starts at the peak
    assert cosine_lr(60, peak, warmup, total) == pytest.approx(peak / 2)  # half way
    assert cosine_lr(110, peak, warmup, total, min_lr=1e-5) == pytest.approx(1e-5)  # the end
    s = 35
    expect = 1e-5 + (peak - 1e-5) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
    assert cosine_lr(s, peak, warmup, total, min_lr=1e-5) == pytest.approx(expect)
    lrs = [cosine_lr(i, peak, warmup, total) for i in range(total)]
    assert all(a <= b for a, b in itertools.pairwise(lrs[:warmup]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[warmup:]))


def test_no_decay_on_biases_norms_and_alibi_scale():
    student = build_data2vec(tiny_config("audio"))
    groups = param_groups(student, weight_decay=0.05)
    no_decay = {n for g in groups if g["weight_decay"] == 0.0 for n in g["names"]}
    decay = {n for g in groups if g["weight_decay"] == 0.05 for n in g["names"]}
    assert "encoder.encoders.audio.alibi.alibi_scale" in no_decay
    for name, p in student.named_parameters():
        if name.endswith(".bias") or "norm" in name or p.ndim == 1:
            assert name in no_decay, name
        else:
            assert name in decay, name
    assert "encoder.blocks.0.attn.qkv.weight" in decay
    assert len(no_decay) + len(decay) == len(list(student.parameters()))


def test_layer_decay_factors():
    cfg = tiny_config("image").encoder  # 1 prenet block + 2 shared blocks
    model = build_encoder(cfg, HeadConfig("mean_pool", ["a", "b"]))
    n = cfg.prenet_depth + cfg.depth
    groups = param_groups(model, 0.05, layer_decay=0.5, prenet_depth=cfg.prenet_depth, num_blocks=n)
    scale = {name: g["lr_scale"] for g in groups for name in g["names"]}
    assert scale["encoders.image.context_encoder.blocks.0.mlp.fc1.weight"] == pytest.approx(0.5**3)
    assert scale["blocks.0.attn.qkv.weight"] == pytest.approx(0.5**2)
    assert scale["blocks.1.norm2.bias"] == pytest.approx(0.5**1)  # the top block is scaled once
    for name in ("head.fc.weight", "encoders.image.local_encoder.proj.weight", "encoders.image.cls_token",
                 "encoders.image.context_encoder.norm.weight"):
        assert scale[name] == 1.0
    assert block_index("encoder.blocks.3.attn.proj.weight", 2) == 5
    assert block_index("decoder.convs.0.weight", 2) is None
    opt = torch.optim.AdamW(groups, lr=1.0)
    set_lr(opt, 2e-3)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([2e-3 * 0.5**3, 2e-3 * 0.25, 2e-3 * 0.5, 2e-3])


def test_tri_stage_values():
    """fairseq's tri_stage with phase_ratio (0.1, 0.4, 0.5), init scale 0.01, final scale 0.05, over
    1000 updates: 100 warming up, 400 holding, 500 decaying exponentially."""
    peak, total = 1e-3, 1000
    lr = [tri_stage_lr(s, peak, total) for s in range(total + 50)]
    assert lr[0] == pytest.approx(1e-5)  # init_scale * peak
    assert lr[50] == pytest.approx(1e-5 + (peak - 1e-5) * 50 / 100)  # linear warmup
    assert lr[99] < peak and lr[100] == lr[499] == peak  # hold
    assert lr[750] == pytest.approx(peak * 0.05 ** 0.5)  # half way through the decay: sqrt(final scale)
    assert lr[1000] == pytest.approx(peak * 0.05) and lr[1049] == pytest.approx(peak * 0.05)  # then kept
    assert all(a <= b for a, b in itertools.pairwise(lr[:500]))
    assert all(a >= b for a, b in itertools.pairwise(lr[500:]))
    assert all(b / a == pytest.approx(0.05 ** (1 / 500)) for a, b in itertools.pairwise(lr[500:1001]))
    # other phases and a final scale; stage lengths are int(fraction * total), as the reference rounds them
    assert tri_stage_lr(0, 2.0, 7, (0.0, 0.5, 0.5), final_scale=0.5) == 2.0  # no warmup: starts at the peak
    assert tri_stage_lr(6, 2.0, 7, (0.0, 0.5, 0.5), final_scale=0.5) == pytest.approx(2.0 * 0.5 ** (3 / 3))
