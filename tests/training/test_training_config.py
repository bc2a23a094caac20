"""Configs: every field documented, the command line generated from the dataclasses, --config files,
reference values filled in per modality."""

import argparse
import dataclasses
import json

import pytest

from d2v.training.config import (
    FinetuneConfig,
    PretrainConfig,
    add_config_arguments,
    config_from_args,
    field_docs,
    resolve_finetune,
    resolve_pretrain,
)


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig])
def test_every_field_documented(cls):
    docs = field_docs(cls)
    assert [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)] == []


def _parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


def test_flags_types_and_config_file(tmp_path):
    cfg = _parse(PretrainConfig, ["--modality", "audio", "--data", "d", "--betas", "0.8", "0.9", "--hflip", "false",
                                  "--splits", "train", "extra", "--clip-norm", "2.5"])
    assert cfg.modality == "audio" and cfg.betas == (0.8, 0.9) and cfg.hflip is False
    assert cfg.splits == ["train", "extra"] and cfg.clip_norm == 2.5 and cfg.steps == 1000
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"modality": "text", "data": "corpus.txt", "steps": 50, "betas": [0.9, 0.99]}))
    cfg = _parse(PretrainConfig, ["--config", str(file), "--steps", "60"])
    assert (cfg.modality, cfg.steps, cfg.betas) == ("text", 60, (0.9, 0.99))  # flags override the file
    with pytest.raises(ValueError, match="--modality"):
        _parse(PretrainConfig, ["--data", "d"])
    with pytest.raises(SystemExit):
        _parse(PretrainConfig, ["--modality", "video", "--data", "d"])


def test_reference_values():
    image = resolve_pretrain(PretrainConfig("image", "d", steps=500))
    assert (image.lr, image.betas, image.weight_decay, image.clip_norm, image.warmup_steps) == (
        1e-3, (0.9, 0.95), 0.05, 4.0, 50)
    audio = resolve_pretrain(PretrainConfig("audio", "d", lr=1e-4))
    assert (audio.lr, audio.betas, audio.eps, audio.weight_decay, audio.clip_norm) == (1e-4, (0.9, 0.98), 1e-6, 0.01, 0.0)
    text = resolve_pretrain(PretrainConfig("text", "d"))
    assert (text.lr, text.clip_norm, text.min_target_std, text.min_pred_std) == (2e-4, 1.0, 0.1, 0.01)
    ft = resolve_finetune(FinetuneConfig("d"), "image")
    assert (ft.layer_decay, ft.weight_decay, ft.drop_path, ft.label_smoothing) == (0.65, 0.05, 0.1, 0.1)
    assert resolve_finetune(FinetuneConfig("d"), "text").drop_path is None  # keeps the checkpoint's
