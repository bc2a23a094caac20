"""Model presets: numbers only. `base` and `large` are the reference configurations (fairseq
examples/data2vec/config/v2); `tiny` is d2v's own size for tests and demos that trains on two CPU
cores.
"""

from collections.abc import Callable

from d2v.model.config import (
    AudioConfig,
    DecoderConfig,
    EMAConfig,
    EncoderConfig,
    ImageConfig,
    MaskConfig,
    ModelConfig,
    TargetConfig,
    TextConfig,
)

__all__ = ["PRESETS", "preset", "preset_names"]


def image_base() -> ModelConfig:
    return ModelConfig(
        encoder=EncoderConfig("image", 768, 12, depth=10, prenet_depth=2, norm_eps=1e-6, dropout=0.0,
                              attention_dropout=0.0, post_mlp_dropout=0.0, image=ImageConfig(224, 16, 3)),
        decoder=DecoderConfig(dim=768, kernel=3, layers=6, groups=16, residual=True, input_dropout=0.0),
        mask=MaskConfig("block", mask_prob=0.8, mask_prob_adjust=0.07, mask_length=3, inverse=True, clone_batch=16),
        target=TargetConfig(top_k=10, instance_norm_target_layer=True, layer_norm_targets=True),
        ema=EMAConfig(0.9998, 0.99999, 100_000, ema_local_encoder=True),
        cls_loss=0.01,
    )


def image_large() -> ModelConfig:
    cfg = image_base()
    cfg.encoder = EncoderConfig("image", 1024, 16, depth=24, prenet_depth=0, norm_eps=1e-6, dropout=0.0,
                                attention_dropout=0.0, post_mlp_dropout=0.0, image=ImageConfig(224, 16, 3))
    cfg.decoder = DecoderConfig(dim=1024, kernel=5, layers=3, groups=16, residual=True, input_dropout=0.0)
    cfg.mask = MaskConfig("block", 0.75, 0.1, 3, inverse=True, clone_batch=16)
    cfg.target.top_k = 18
    cfg.ema.anneal_end_step = 150_000
    return cfg


def image_tiny() -> ModelConfig:
    cfg = image_base()
    cfg.encoder = EncoderConfig("image", 64, 4, depth=3, prenet_depth=1, norm_eps=1e-6, dropout=0.0,
                                attention_dropout=0.0, post_mlp_dropout=0.0, image=ImageConfig(32, 4, 3))
    cfg.decoder = DecoderConfig(dim=64, kernel=3, layers=2, groups=4, residual=True, input_dropout=0.0)
    cfg.mask.clone_batch = 8
    cfg.target.top_k = 3
    cfg.ema = EMAConfig(0.999, 0.9999, 2_000, ema_local_encoder=True)
    return cfg


def audio_base() -> ModelConfig:
    return ModelConfig(
        encoder=EncoderConfig("audio", 768, 12, depth=12, prenet_depth=0, norm_eps=1e-5, dropout=0.1,
                              attention_dropout=0.1, post_mlp_dropout=0.1, prenet_dropout=0.1, layerdrop=0.05,
                              audio=AudioConfig()),
        decoder=DecoderConfig(dim=384, kernel=7, layers=4, groups=16, residual=True, input_dropout=0.1),
        mask=MaskConfig("block", mask_prob=0.5, mask_prob_adjust=0.05, mask_length=5, clone_batch=8),
        target=TargetConfig(top_k=8, instance_norm_target_layer=True),
        ema=EMAConfig(0.999, 0.99999, 75_000, ema_local_encoder=False),
    )


def audio_large() -> ModelConfig:
    cfg = audio_base()
    # the reference's large audio config sets no layerdrop (0); its other dropouts keep the base values
    cfg.encoder = EncoderConfig("audio", 1024, 16, depth=16, prenet_depth=8, norm_eps=1e-5, dropout=0.1,
                                attention_dropout=0.1, post_mlp_dropout=0.1, prenet_dropout=0.1,
                                layerdrop=0.0, audio=AudioConfig())
    cfg.decoder = DecoderConfig(dim=768, kernel=7, layers=4, groups=16, residual=True, input_dropout=0.1)
    cfg.mask = MaskConfig("block", 0.55, 0.1, 5, clone_batch=12)
    cfg.target.top_k = 16
    cfg.ema = EMAConfig(0.9997, 1.0, 300_000, ema_local_encoder=False)
    return cfg


def audio_tiny() -> ModelConfig:
    cfg = audio_base()
    conv = [[64, 10, 5]] + [[64, 3, 2]] * 4 + [[64, 2, 2]] * 2  # the reference's stride 320, fewer channels
    cfg.encoder = EncoderConfig("audio", 64, 4, depth=4, prenet_depth=0, norm_eps=1e-5, dropout=0.1,
                                attention_dropout=0.1, post_mlp_dropout=0.1, prenet_dropout=0.1,
                                audio=AudioConfig(conv_layers=conv, conv_pos_depth=2, conv_pos_groups=4))
    cfg.decoder = DecoderConfig(dim=64, kernel=7, layers=2, groups=4, residual=True, input_dropout=0.1)
    cfg.target.top_k = 4
    cfg.ema = EMAConfig(0.999, 0.9999, 2_000, ema_local_encoder=False)
    return cfg


def text_base() -> ModelConfig:
    return ModelConfig(
        encoder=EncoderConfig("text", 768, 12, depth=12, prenet_depth=0, norm_eps=1e-5, dropout=0.1,
                              attention_dropout=0.1, post_mlp_dropout=0.1, text=TextConfig(50265, 512, 1)),
        decoder=DecoderConfig(dim=768, kernel=9, layers=5, groups=1, residual=False, projection_layers=2,
                              projection_ratio=2.0, input_dropout=0.1),
        mask=MaskConfig("random", mask_prob=0.48, mask_length=1, clone_batch=8),
        target=TargetConfig(top_k=12, instance_norm_target_layer=True),
        ema=EMAConfig(0.9999, 0.99999, 100_000, ema_local_encoder=False),
        loss_scale=1.0,
    )


def text_large() -> ModelConfig:
    cfg = text_base()
    cfg.encoder = EncoderConfig("text", 1024, 16, depth=24, prenet_depth=0, norm_eps=1e-5, dropout=0.1,
                                attention_dropout=0.1, post_mlp_dropout=0.1, text=TextConfig(50265, 512, 1))
    cfg.mask.mask_prob = 0.5
    cfg.target = TargetConfig(top_k=24, instance_norm_target_layer=False, layer_norm_target_layer=True,
                              instance_norm_targets=True)
    return cfg


def text_tiny() -> ModelConfig:
    cfg = text_base()
    cfg.encoder = EncoderConfig("text", 64, 4, depth=4, prenet_depth=0, norm_eps=1e-5, dropout=0.1,
                                attention_dropout=0.1, post_mlp_dropout=0.1, text=TextConfig(4000, 128, 1))
    cfg.decoder = DecoderConfig(dim=64, kernel=9, layers=2, groups=1, residual=False, projection_layers=2,
                                projection_ratio=2.0, input_dropout=0.1)
    cfg.target.top_k = 4
    cfg.ema = EMAConfig(0.999, 0.9999, 2_000, ema_local_encoder=False)
    return cfg


PRESETS: dict[tuple[str, str], Callable[[], ModelConfig]] = {
    ("image", "tiny"): image_tiny,
    ("image", "base"): image_base,
    ("image", "large"): image_large,
    ("audio", "tiny"): audio_tiny,
    ("audio", "base"): audio_base,
    ("audio", "large"): audio_large,
    ("text", "tiny"): text_tiny,
    ("text", "base"): text_base,
    ("text", "large"): text_large,
}


def preset_names() -> list[str]:
    return [f"{m}-{s}" for m, s in PRESETS]


def preset(modality: str, size: str = "base") -> ModelConfig:
    """A fresh `ModelConfig` for e.g. ("audio", "base")."""
    try:
        return PRESETS[(modality, size)]()
    except KeyError:
        raise ValueError(f"no preset {modality}-{size}; available: {', '.join(preset_names())}") from None
