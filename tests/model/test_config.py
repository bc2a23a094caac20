"""Config dataclasses: dict/JSON round-trips for every preset, and validation that names the field of
every wrong type or value."""

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
from d2v.model.config import ConfigError, head_from_dict


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


@pytest.mark.parametrize("data, message", [
    ({"modality": "image", "num_heads": 0}, "encoder.num_heads must be a positive integer, got 0"),
    ({"modality": "image", "depth": -1}, "encoder.depth must be a positive integer, got -1"),
    ({"modality": "image", "depth": 2.0}, "encoder.depth must be a positive integer, got 2.0"),
    ({"modality": "image", "depth": True}, "encoder.depth must be a positive integer, got True"),
    ({"modality": "image", "image": {"image_size": "big"}}, "encoder.image.image_size must be a positive integer"),
    ({"modality": "video"}, "encoder.modality must be one of 'image', 'audio', 'text', got 'video'"),
    ({"embed_dim": 64}, "encoder.modality is missing"),
    ({"modality": "image", "norm_eps": float("nan")}, "encoder.norm_eps must be a positive number, got nan"),
    ({"modality": "image", "layerdrop": 2}, "encoder.layerdrop must be a number from 0 to 1, got 2.0"),
    ({"modality": "audio", "audio": {"conv_layers": [[64, 10]]}}, "encoder.audio.conv_layers must be a non-empty"),
    ({"modality": "audio", "audio": {"conv_layers": [[64, 10, "5"]]}}, "encoder.audio.conv_layers must be"),
    ({"modality": "audio", "embed_dim": 68, "num_heads": 4}, "not divisible by encoder.audio.conv_pos_groups 16"),
    ({"modality": "text", "text": {"vocab_size": 10, "pad_id": 10}}, "encoder.text.pad_id 10 must be below"),
    ({"modality": "image", "image": [224]}, "encoder.image must be an object"),
    ({"modality": "image", "embed_dim": 768, "num_heads": 7}, "encoder: embed_dim 768 is not divisible by num_heads 7"),
])
def test_invalid_values_name_the_field(data, message):
    with pytest.raises(ConfigError) as e:
        config_from_dict(data, "encoder")
    assert message in str(e.value)


def test_model_config_fields_are_checked_too():
    d = preset("text", "tiny").to_dict()
    d["mask"]["clone_batch"] = 0
    with pytest.raises(ConfigError, match="mask.clone_batch must be a positive integer, got 0"):
        config_from_dict(d)
    d = preset("image", "tiny").to_dict()
    d["decoder"]["groups"] = 3
    with pytest.raises(ConfigError, match="decoder.groups 3 must divide"):
        config_from_dict(d)


def test_head_validation():
    assert head_from_dict({"type": "first_token", "labels": ["a"]}).pooling == "mean"
    with pytest.raises(ConfigError, match="head.labels must be a non-empty list of strings, got \\[\\]"):
        head_from_dict({"type": "mean_pool", "labels": []})
    with pytest.raises(ConfigError, match="head.labels must be a non-empty list of strings, got \\['a', 2\\]"):
        head_from_dict({"type": "mean_pool", "labels": ["a", 2]})
    with pytest.raises(ConfigError, match="head.type is missing"):
        head_from_dict({"labels": ["a"]})


def test_config_validation_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from d2v.model.checkpoint_config import read_config\n"
            "from d2v.model.safetensors_header import read_header\n")
    subprocess.run([sys.executable, "-c", code], check=True)
