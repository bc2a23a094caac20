"""Every command that reads a checkpoint (export, embed, finetune, serve, and convert when it reads
the directory it would replace) refuses a broken one the same way: one line naming the file and the
field, exit 2, no traceback, and nothing allocated for a model the weights cannot fill."""

import json
import shutil

import pytest
import torch
import uvicorn
from realdata import tiny_config
from safetensors.torch import load_file, save_file

from d2v.cli import main
from d2v.model import HeadConfig, build_encoder
from d2v.model.checkpoint import CheckpointConfig, save_checkpoint


def _encoder(**changes):
    def edit(config):
        config["encoder"].update(changes)
    return edit


def _set(path: str, value):
    def edit(config):
        *parents, key = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        if value is _DROP:
            del node[key]
        else:
            node[key] = value
    return edit


_DROP = object()

# config.json edits -> what the one-line error must say (besides the file)
BROKEN_CONFIGS = {
    "num_heads 0": (_encoder(num_heads=0), "encoder.num_heads must be a positive integer, got 0"),
    "depth -1": (_encoder(depth=-1), "encoder.depth must be a positive integer, got -1"),
    "image_size big": (_set("encoder.image.image_size", "big"),
                       "encoder.image.image_size must be a positive integer, got 'big'"),
    "unknown modality": (lambda c: c.update(modality="video") or c["encoder"].update(modality="video"),
                         "encoder.modality must be one of 'image', 'audio', 'text', got 'video'"),
    "no encoder section": (_set("encoder", _DROP), "the encoder section is missing"),
    "encoder not an object": (_set("encoder", [1, 2]), "encoder must be an object"),
    "no image section fields": (_set("encoder.image", {"wings": 2}), "unknown ImageConfig fields: wings"),
    "mlp_ratio a string": (_encoder(mlp_ratio="4"), "encoder.mlp_ratio must be a positive number, got '4'"),
    "dropout 1.5": (_encoder(dropout=1.5), "encoder.dropout must be a number from 0 to 1, got 1.5"),
    "embed_dim not a multiple of 4": (_encoder(embed_dim=30), "encoder.embed_dim must be a multiple of 4"),
    "patch does not tile": (_set("encoder.image.patch_size", 5), "image_size 32 is not a multiple of"),
    "head without labels": (_set("head", {"type": "mean_pool", "labels": []}), "head.labels must be a non-empty"),
    "unknown head type": (_set("head.type", "svm"), "head.type must be one of"),
    "preprocessing without mean": (_set("preprocessing.mean", _DROP), "preprocessing.mean is missing"),
    "preprocessing size differs": (_set("preprocessing.image_size", 64), "preprocessing.image_size must be"),
    "name not a string": (_set("name", 5), "name must be a non-empty string"),
    "modality mismatch": (_set("modality", "audio"), "modality 'audio' does not match encoder 'image'"),
    "a 26 GB model": (_encoder(embed_dim=16384), "does not fit its config: shape mismatches"),
    "100,000 blocks": (_encoder(depth=100_000), "the config asks for 100001 layers"),
}


def _poison(value: float):
    def edit(state):
        state["blocks.1.mlp.fc1.weight"][3, 5] = value
    return edit


def _int8(state):
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"].mul(100).to(torch.int8)


# model.safetensors edits -> what the error must say
BROKEN_WEIGHTS = {
    "NaN": (_poison(float("nan")), "blocks.1.mlp.fc1.weight holds 1 non-finite value(s)"),
    "Inf": (_poison(float("inf")), "blocks.1.mlp.fc1.weight holds 1 non-finite value(s)"),
    "int8 floats": (_int8, "blocks.0.attn.qkv.weight is stored as int8, but the model holds it as float32"),
}

COMMANDS = ["export", "embed", "finetune", "serve"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid tiny image checkpoint with a head, stored in fp16 like the bundled models."""
    torch.manual_seed(0)
    cfg = tiny_config("image").encoder
    head = HeadConfig("mean_pool", [str(i) for i in range(10)])
    path = tmp_path_factory.mktemp("good") / "ckpt"
    return save_checkpoint(path, build_encoder(cfg, head), CheckpointConfig("tiny", cfg, head), dtype=torch.float16)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """The labelled digits, for finetune (the full demo build: well under a second) and embed."""
    from d2v.training.data.demo import build_digits

    return build_digits(tmp_path_factory.mktemp("data") / "digits")


@pytest.fixture(scope="module")
def hf_source(tmp_path_factory):
    """A tiny HuggingFace Data2VecText directory for `d2v convert`."""
    transformers = pytest.importorskip("transformers")
    src = tmp_path_factory.mktemp("hf") / "text"
    config = transformers.Data2VecTextConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                             type_vocab_size=1, pad_token_id=1)
    transformers.Data2VecTextModel(config, add_pooling_layer=False).save_pretrained(src)
    return src


@pytest.fixture(autouse=True)
def _no_server(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("d2v serve started a server on a broken checkpoint")
    monkeypatch.setattr(uvicorn, "run", started)


def _run(command: str, ckpt, tmp_path, digits_dir) -> list[str]:
    argv = {
        "export": ["export", str(ckpt), "--out", str(tmp_path / "onnx")],
        "embed": ["embed", "--model", str(ckpt), "--input", str(digits_dir / "test"), "--output",
                  str(tmp_path / "emb"), "--no-progress"],
        "finetune": ["finetune", "--init", str(ckpt), "--data", str(digits_dir), "--out", str(tmp_path / "ft"),
                     "--epochs", "1", "--labels-per-class", "1", "--progress", "false"],
        "serve": ["serve", "--model", str(ckpt), "--port", "0"],
    }[command]
    return argv


def _check(capsys, rc: int, command: str, file: str, expected: str) -> None:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"d2v {command}"), err
    assert file in lines[0] and expected in lines[0], lines[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(BROKEN_CONFIGS))
def test_broken_config(tmp_path, good, digits_dir, capsys, case, command):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good, ckpt)
    edit, expected = BROKEN_CONFIGS[case]
    config = json.loads((ckpt / "config.json").read_text())
    edit(config)
    (ckpt / "config.json").write_text(json.dumps(config))
    rc = main(_run(command, ckpt, tmp_path, digits_dir))
    file = "model.safetensors" if "does not fit" in expected or "asks for" in expected else "config.json"
    _check(capsys, rc, command, str(ckpt / file), expected)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(BROKEN_WEIGHTS))
def test_broken_weights(tmp_path, good, digits_dir, capsys, case, command):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good, ckpt)
    edit, expected = BROKEN_WEIGHTS[case]
    state = load_file(str(ckpt / "model.safetensors"))
    edit(state)
    save_file(state, str(ckpt / "model.safetensors"))
    rc = main(_run(command, ckpt, tmp_path, digits_dir))
    _check(capsys, rc, command, str(ckpt / "model.safetensors"), expected)


@pytest.mark.parametrize("case", list(BROKEN_CONFIGS)[:8])
def test_convert_names_the_field_of_the_checkpoint_it_would_replace(tmp_path, good, hf_source, capsys, case):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(good, ckpt)
    edit, expected = BROKEN_CONFIGS[case]
    data = json.loads((ckpt / "config.json").read_text())
    edit(data)
    (ckpt / "config.json").write_text(json.dumps(data))
    before = (ckpt / "config.json").read_bytes()
    capsys.readouterr()
    rc = main(["convert", str(hf_source), "--out", str(ckpt)])
    _check(capsys, rc, "convert", str(ckpt / "config.json"), expected)
    assert (ckpt / "config.json").read_bytes() == before


def test_a_config_claiming_a_huge_model_is_never_built(tmp_path, good, monkeypatch):
    """The weights' header is checked against a model built on the meta device; the real model is
    built only once they match."""
    from d2v.model import checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(good, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["encoder"]["embed_dim"] = 16384  # 2 blocks of 16384 wide: 26 GB of float32
    (ckpt / "config.json").write_text(json.dumps(config))
    built = checkpoint.build_encoder

    def meta_only(cfg, head=None):
        assert torch.get_default_device().type == "meta", "a model was allocated before its weights were checked"
        return built(cfg, head)

    monkeypatch.setattr(checkpoint, "build_encoder", meta_only)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit its config"):
        checkpoint.load_checkpoint(ckpt)


def test_bundled_and_written_configs_still_load(good):
    """fp16 storage (the bundled models) is valid; so is every config the project writes."""
    from d2v.model.checkpoint import load_checkpoint

    model, cfg = load_checkpoint(good)
    assert cfg.head.labels[0] == "0" and next(model.parameters()).dtype == torch.float32
