"""Configs: every field documented, the command line generated from the dataclasses, --config files
checked and converted by the fields' types, reference values filled in per modality."""

import argparse
import dataclasses
import json

import pytest
from texts import assert_one_line_error

from d2v.cli import main
from d2v.configuration import ConfigError, add_arguments, config_from_args, field_docs, help_text
from d2v.server.config import ServeConfig
from d2v.training.config import FinetuneConfig, PretrainConfig, resolve_finetune, resolve_pretrain


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig, ServeConfig])
def test_every_field_documented(cls):
    docs = field_docs(cls)
    assert [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)] == []


def test_help_states_the_reference_values_of_the_tables(capsys):
    """The reference values live in the tables the runs read; the help text is filled from them."""
    assert help_text(PretrainConfig, "lr") == "Peak learning rate (reference: image 0.001, audio 0.00075, text 0.0002)."
    assert help_text(PretrainConfig, "weight_decay").endswith("(reference: image 0.05, audio and text 0.01).")
    assert help_text(FinetuneConfig, "eps").endswith("(reference: image and audio 1e-08, text 1e-06; --task ctc: 1e-08).")
    assert help_text(FinetuneConfig, "phase_ratio").endswith("(reference: 0.1 0.4 0.5).")
    assert [f.name for cls in (PretrainConfig, FinetuneConfig, ServeConfig) for f in dataclasses.fields(cls)
            if "{" in help_text(cls, f.name)] == []  # every placeholder filled
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "--task ctc: 0.0005" in " ".join(capsys.readouterr().out.split())


def _parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls, config_file=True)
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


def test_yaml_values_are_converted_by_type(tmp_path):
    file = tmp_path / "run.yaml"  # YAML 1.1 (PyYAML) reads 1e-3 as the string "1e-3": the float field converts it
    file.write_text("modality: audio\ndata: d\nlr: 1e-3\nsteps: '40'\nhflip: no\nbetas: [0.9, 1]\n"
                    "max-tokens: 64\ntokenizer: null\nsplits: [train, extra]\n")
    cfg = _parse(PretrainConfig, ["--config", str(file)])
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float)
    assert (cfg.steps, cfg.hflip, cfg.betas, cfg.max_tokens, cfg.tokenizer, cfg.splits) == (
        40, False, (0.9, 1.0), 64, None, ["train", "extra"])
    assert isinstance(cfg.betas[1], float)
    cfg = _parse(PretrainConfig, ["--config", str(file), "--lr", "5e-4", "--hflip", "true", "--steps", "7"])
    assert (cfg.lr, cfg.hflip, cfg.steps, cfg.modality) == (5e-4, True, 7, "audio")  # flags override the file


@pytest.mark.parametrize(("text", "key", "why"), [
    ("steps: many", "steps", "expected an integer, got 'many'"),
    ("steps: 2.5", "steps", "expected an integer, got 2.5"),
    ("lr: fast", "lr", "expected a number"),
    ("hflip: 3", "hflip", "expected true or false"),
    ("precision: fp8", "precision", "expected one of auto, bf16, fp32, got 'fp8'"),
    ("modality: video", "modality", "expected one of image, audio, text"),
    ("betas: [0.9]", "betas", "expected 2 values, got 1"),
    ("splits: train", "splits", "expected a list"),
    ("steps: null", "steps", "may not be null"),
    ("stpes: 10", "stpes", "unknown setting"),
])
def test_a_bad_config_file_is_one_line_naming_the_key(tmp_path, capsys, text, key, why):
    file = tmp_path / "run.yaml"
    file.write_text(text + "\n")
    with pytest.raises(ConfigError, match=why):
        _parse(PretrainConfig, ["--modality", "image", "--data", "d", "--config", str(file)])
    assert main(["pretrain", "--modality", "image", "--data", "d", "--config", str(file)]) == 2
    assert_one_line_error(capsys.readouterr().err, "d2v pretrain: ", f"{file}: {key}: ", why)


def test_a_bad_json_config_file(tmp_path, capsys):
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"data": "d", "task": "segment"}))
    assert main(["finetune", "--config", str(file)]) == 2
    assert_one_line_error(capsys.readouterr().err, "d2v finetune: ", f"{file}: task: expected one of classify, ctc")
    for text, why in (("{", "not valid JSON"), ("[1, 2]", "expected a mapping")):
        file.write_text(text)
        assert main(["finetune", "--config", str(file)]) == 2
        assert_one_line_error(capsys.readouterr().err, f"{file}: {why}")
    assert main(["finetune", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert_one_line_error(capsys.readouterr().err, "absent.yaml: cannot read it")


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


def test_the_recipe_table_of_the_docs_states_the_reference_values():
    """docs/training.md repeats PRETRAIN_REFERENCE for readers; the table that runs is the one in the code."""
    import ast
    from pathlib import Path

    from d2v.training.config import PRETRAIN_REFERENCE

    text = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
            for line in text.splitlines() if line.startswith(("| AdamW", "| gradient clipping", "| collapse guard"))}
    value = ast.literal_eval
    for modality, (adamw, clip, guard) in zip(("image", "audio", "text"), zip(*rows.values(), strict=True),
                                              strict=True):
        ref = PRETRAIN_REFERENCE[modality]
        lr, betas, eps, wd = map(value, adamw.split(" / "))
        assert (lr, betas, eps, wd) == (ref["lr"], ref["betas"], ref["eps"], ref["weight_decay"]), modality
        assert (0.0 if clip == "off" else value(clip)) == ref["clip_norm"], modality
        floors = (0.0, 0.0) if guard == "off" else tuple(map(value, guard.split(" / ")))
        assert floors == (ref["min_target_std"], ref["min_pred_std"]), modality
