"""Presets: every one builds, base/large sizes match the reference models, and the numbers match
the reference. Base and large models are built on the meta device (no memory, no init cost)."""

import math

import pytest
import torch
from torch import nn

from d2v.model import build_data2vec, build_encoder, build_teacher, preset, preset_names
from d2v.model.presets import PRESETS


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta_encoder(modality, size):
    with torch.device("meta"):
        return build_encoder(preset(modality, size).encoder)


@pytest.mark.parametrize("modality, size, reference, tol", [
    ("image", "base", 85.8e6, 0.01),     # ViT-B/16 without head
    ("audio", "base", 93.2e6, 0.01),     # data2vec / wav2vec 2.0 base encoder
    ("text", "base", 124.6e6, 0.01),     # RoBERTa base
    ("image", "large", 304.3e6, 0.01),   # ViT-L/16 without head
    ("audio", "large", 317.4e6, 0.02),   # wav2vec 2.0 large, ~317M with its quantizer (d2v has none)
    ("text", "large", 355.4e6, 0.01),    # RoBERTa large
])
def test_parameter_counts_near_the_reference(modality, size, reference, tol):
    n = _count(_meta_encoder(modality, size))
    assert abs(n - reference) / reference < tol, f"{modality}-{size}: {n / 1e6:.2f}M"


def test_text_base_is_roberta_base_without_pooler():
    n = _count(_meta_encoder("text", "base"))
    assert 124e6 <= n <= 125e6


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds(name):
    modality, size = name.split("-")
    cfg = preset(modality, size)
    device = "cpu" if size == "tiny" else "meta"
    with torch.device(device):
        student = build_data2vec(cfg)
        teacher = build_teacher(student, cfg)
    enc = student.encoder
    assert enc.modality == modality
    assert len(enc.blocks) == cfg.encoder.depth
    assert len(enc.input_encoder.context_encoder.blocks) == cfg.encoder.prenet_depth
    assert len(student.decoder.convs) == cfg.decoder.layers
    assert _count(teacher.model) < _count(student)
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_tiny_presets_run_on_cpu():
    torch.manual_seed(0)
    inputs = {"image": torch.rand(2, 3, 32, 32), "audio": torch.randn(2, 3200),
              "text": torch.randint(4, 4000, (2, 12))}
    for modality, x in inputs.items():
        cfg = preset(modality, "tiny")
        enc = build_encoder(cfg.encoder).eval()
        out, _ = enc.forward_features(x)
        assert out.shape[-1] == cfg.encoder.embed_dim and torch.isfinite(out).all()


def test_preset_lookup():
    assert len(preset_names()) == 9 and "audio-base" in preset_names()
    assert preset("audio") == preset("audio", "base")
    a = preset("image", "base")
    a.encoder.depth = 1
    assert preset("image", "base").encoder.depth == 10  # a fresh config every call
    with pytest.raises(ValueError, match="no preset image-huge; available: image-tiny"):
        preset("image", "huge")
    assert set(PRESETS) == {(m, s) for m in ("image", "audio", "text") for s in ("tiny", "base", "large")}


def test_reference_numbers():
    """The reference settings: masking, targets, EMA, encoders and decoders."""
    img = preset("image", "base")
    e = img.encoder
    assert (e.embed_dim, e.num_heads, e.depth, e.prenet_depth, e.norm_eps) == (768, 12, 10, 2, 1e-6)
    assert (e.dropout, e.attention_dropout, e.post_mlp_dropout) == (0.0, 0.0, 0.0)
    m = img.mask
    assert (m.kind, m.mask_prob, m.mask_prob_adjust, m.mask_length, m.inverse, m.clone_batch) == (
        "block", 0.8, 0.07, 3, True, 16)
    t = img.target
    assert (t.top_k, t.instance_norm_target_layer, t.layer_norm_targets, t.instance_norm_targets) == (
        10, True, True, False)
    assert (img.ema.decay, img.ema.end_decay, img.ema.anneal_end_step, img.ema.ema_local_encoder) == (
        0.9998, 0.99999, 100_000, True)
    assert img.cls_loss == 0.01 and img.loss_scale is None
    d = img.decoder
    assert (d.dim, d.kernel, d.layers, d.groups, d.residual, d.projection_layers, d.input_dropout) == (
        768, 3, 6, 16, True, 1, 0.0)

    large = preset("image", "large")
    assert (large.encoder.depth, large.encoder.prenet_depth, large.target.top_k) == (24, 0, 18)
    assert (large.mask.mask_prob, large.mask.mask_prob_adjust, large.ema.anneal_end_step) == (
        0.75, 0.1, 150_000)
    assert (large.decoder.dim, large.decoder.kernel, large.decoder.layers) == (1024, 5, 3)

    aud = preset("audio", "base")
    assert (aud.mask.kind, aud.mask.mask_prob, aud.mask.mask_prob_adjust, aud.mask.mask_length,
            aud.mask.inverse, aud.mask.clone_batch) == ("block", 0.5, 0.05, 5, False, 8)
    assert (aud.target.top_k, aud.target.instance_norm_target_layer, aud.target.layer_norm_targets) == (
        8, True, False)
    assert (aud.ema.decay, aud.ema.end_decay, aud.ema.anneal_end_step, aud.ema.ema_local_encoder) == (
        0.999, 0.99999, 75_000, False)
    assert (aud.encoder.layerdrop, aud.encoder.prenet_dropout, aud.encoder.norm_eps) == (0.05, 0.1, 1e-5)
    assert (aud.decoder.dim, aud.decoder.kernel, aud.decoder.layers, aud.decoder.input_dropout) == (
        384, 7, 4, 0.1)
    a = aud.encoder.audio
    assert a.conv_layers == [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2
    assert (a.conv_bias, a.conv_pos_depth, a.conv_pos_kernel, a.conv_pos_groups, a.use_alibi) == (
        False, 5, 19, 16, True)

    alarge = preset("audio", "large")
    assert (alarge.encoder.depth, alarge.encoder.prenet_depth, alarge.target.top_k) == (16, 8, 16)
    assert (alarge.mask.mask_prob, alarge.mask.mask_prob_adjust, alarge.mask.clone_batch) == (0.55, 0.1, 12)
    assert (alarge.ema.decay, alarge.ema.end_decay, alarge.ema.anneal_end_step) == (0.9997, 1.0, 300_000)
    assert alarge.encoder.layerdrop == 0.0  # the reference's large audio config has none (base: 0.05)

    txt = preset("text", "base")
    assert (txt.mask.kind, txt.mask.mask_prob, txt.mask.mask_length, txt.mask.clone_batch) == (
        "random", 0.48, 1, 8)
    assert (txt.target.top_k, txt.loss_scale, txt.cls_loss) == (12, 1.0, 0.0)
    assert (txt.ema.decay, txt.ema.end_decay, txt.ema.anneal_end_step) == (0.9999, 0.99999, 100_000)
    d = txt.decoder
    assert (d.dim, d.kernel, d.layers, d.groups, d.residual, d.projection_layers, d.projection_ratio) == (
        768, 9, 5, 1, False, 2, 2.0)
    t = txt.encoder.text
    assert (t.vocab_size, t.max_positions, t.pad_id) == (50265, 512, 1)
    tl = preset("text", "large")
    assert (tl.encoder.embed_dim, tl.encoder.depth, tl.mask.mask_prob) == (1024, 24, 0.5)
    assert (tl.target.top_k, tl.target.instance_norm_target_layer, tl.target.layer_norm_target_layer,
            tl.target.instance_norm_targets) == (24, False, True, True)


def test_reference_decoders_and_context_encoders():
    with torch.device("meta"):
        img = build_data2vec(preset("image", "base"))
        aud = build_data2vec(preset("audio", "base"))
        txt = build_data2vec(preset("text", "large"))
    assert all(isinstance(c, nn.Conv2d) for c in img.decoder.convs) and img.decoder.residual == [True] * 6
    assert (img.decoder.proj.in_features, img.decoder.proj.out_features) == (768, 768)
    assert all(isinstance(c, nn.Conv1d) and c.groups == 16 for c in aud.decoder.convs)
    assert aud.decoder.residual == [False, True, True, True]  # 768 -> 384 first
    assert (aud.decoder.proj.in_features, aud.decoder.proj.out_features) == (384, 768)
    assert txt.decoder.residual == [False] * 5
    assert [(m.in_features, m.out_features) for m in txt.decoder.proj if isinstance(m, nn.Linear)] == [
        (768, 1536), (1536, 1024)]
    # images and audio have the context-encoder LayerNorm; text without prenet blocks has none
    assert isinstance(img.encoder.input_encoder.context_encoder.norm, nn.LayerNorm)
    assert isinstance(aud.encoder.input_encoder.context_encoder.norm, nn.LayerNorm)
    assert isinstance(txt.encoder.input_encoder.context_encoder.norm, nn.Identity)
    alibi = aud.encoder.input_encoder.alibi
    assert alibi is not None and alibi.alibi_scale.numel() == 12
    assert aud.encoder.layerdrop == 0.05


@torch.no_grad()
def test_reference_initialisation():
    """As the reference: the patch embedding keeps PyTorch's default bias (xavier weights); the text
    decoder's projections get BERT init (N(0, 0.02), bias 0) while the image and audio decoders'
    keep PyTorch's default."""
    torch.manual_seed(0)
    img = build_data2vec(preset("image", "tiny"))
    conv = img.encoder.input_encoder.local_encoder.proj
    bound = 1 / math.sqrt(conv.weight[0].numel())  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert conv.bias.abs().max() <= bound and conv.bias.abs().max() > bound / 2 and conv.bias.std() > bound / 4
    txt = build_data2vec(preset("text", "tiny"))
    linears = [m for m in txt.decoder.proj if isinstance(m, nn.Linear)]
    assert len(linears) == 2
    for m in linears:
        assert torch.count_nonzero(m.bias) == 0
        assert abs(float(m.weight.std()) - 0.02) < 0.002 and abs(float(m.weight.mean())) < 0.002
    for model in (img, build_data2vec(preset("audio", "tiny"))):
        proj = model.decoder.proj
        assert torch.count_nonzero(proj.bias) == proj.bias.numel()  # PyTorch's default: uniform, not zero
        assert float(proj.weight.abs().max()) <= 1 / math.sqrt(proj.in_features)
