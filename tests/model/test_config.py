"""Config dataclasses: dict/JSON round-trips for every preset and clear errors."""

import json

import pytest

from d2v.model import (
    AudioConfig,
    DecoderConfig,
    EncoderConfig,
    HeadConfig,
    ImageConfig,
    ModelConfig,
    config_from_dict,
    preset,
    preset_names,
)


@pytest.mark.parametrize("name", preset_names())
def test_round_trip_every_preset(name):
    cfg = preset(*name.split("-"))
    d = cfg.to_dict()
    assert config_from_dict(d) == cfg
    assert config_from_dict(json.loads(json.dumps(d))) == cfg  # JSON-safe
    enc = cfg.encoder.to_dict()
    assert config_from_dict(enc) == cfg.encoder
    assert config_from_dict(json.loads(json.dumps(enc))) == cfg.encoder
    assert set(enc) & {"image", "audio", "text"} == {cfg.encoder.modality}  # only its own section


def test_model_config_dict_shape():
    d = preset("image", "base").to_dict()
    assert set(d) == {"encoder", "decoder", "mask", "target", "ema", "loss_scale", "cls_loss"}
    assert d["encoder"]["image"] == {"image_size": 224, "patch_size": 16, "in_chans": 3}


def test_sections_default_when_absent():
    cfg = config_from_dict({"modality": "audio"})
    assert isinstance(cfg, EncoderConfig) and cfg.audio == AudioConfig()
    model = config_from_dict({"encoder": {"modality": "text", "embed_dim": 64, "num_heads": 4}})
    assert isinstance(model, ModelConfig) and model.decoder == DecoderConfig()
    assert model.encoder.text.pad_id == 1


@pytest.mark.parametrize("path, cls", [
    ((), "ModelConfig"),
    (("encoder",), "EncoderConfig"),
    (("encoder", "image"), "ImageConfig"),
    (("decoder",), "DecoderConfig"),
    (("mask",), "MaskConfig"),
    (("target",), "TargetConfig"),
    (("ema",), "EMAConfig"),
])
def test_unknown_fields_are_named(path, cls):
    d = preset("image", "base").to_dict()
    section = d
    for key in path:
        section = section[key]
    section["bogus_field"] = 1
    with pytest.raises(ValueError, match=f"unknown {cls} fields: bogus_field"):
        config_from_dict(d)


def test_invalid_encoder_configs():
    with pytest.raises(ValueError, match="modality must be one of"):
        EncoderConfig("video")
    with pytest.raises(ValueError, match="cannot have an 'image' section"):
        EncoderConfig("audio", image=ImageConfig())
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        EncoderConfig("text", embed_dim=100, num_heads=12)
    with pytest.raises(ValueError, match="cannot have"):
        config_from_dict({"modality": "text", "audio": {}})
    with pytest.raises(ValueError, match="at least one label"):
        HeadConfig("mean_pool", [])


def test_inputs_property():
    enc = preset("text", "tiny").encoder
    assert enc.inputs is enc.text
