"""The inference checkpoint directory: bit-exact round trips, fp16/bf16 storage, atomic overwrite
(a kill at any step leaves the old or the new checkpoint), and named errors for every kind of broken
checkpoint: config, files, header, NaN/Inf and wrongly typed weights."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from realdata import byte_tokens, pad_waveforms, tiny_config
from safetensors import safe_open
from safetensors.torch import save_file

from d2v.model import HeadConfig, build_encoder
from d2v.model.checkpoint import (
    FORMAT,
    CheckpointConfig,
    CheckpointError,
    check_state_dict,
    load_checkpoint,
    read_config,
    save_checkpoint,
)

LABELS = ["a", "b", "c"]
HEADS = {"image": "mean_pool", "audio": "mean_pool", "text": "first_token"}


@pytest.fixture(scope="module")
def inputs(digit_images, spoken_digits, glosses):
    return {
        "image": (digit_images[0][:3], None),
        "audio": pad_waveforms(spoken_digits[:3]),
        "text": (byte_tokens(glosses[:3], vocab=4000), None),
    }


def _model(modality, head=False, seed=0):
    torch.manual_seed(seed)
    enc_cfg = tiny_config(modality).encoder
    head_cfg = HeadConfig(HEADS[modality], LABELS) if head else None
    model = build_encoder(enc_cfg, head_cfg)
    with torch.no_grad():  # move every weight off its init (e.g. LayerNorm ones, zero biases)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval(), CheckpointConfig(f"tiny-{modality}", enc_cfg, head_cfg, provenance={"test": True})


def _save(tmp_path, modality="image", head=False, name="ckpt", seed=0, **kw):
    model, cfg = _model(modality, head, seed)
    if modality == "text" and "tokenizer" not in kw:
        tok = tmp_path / "spm.model"
        tok.write_bytes(b"not really a sentencepiece model")
        kw["tokenizer"] = tok
    return save_checkpoint(tmp_path / name, model, cfg, **kw), model, cfg


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
@pytest.mark.parametrize("head", [False, True])
def test_round_trip_is_bit_exact(tmp_path, inputs, modality, head):
    path, model, cfg = _save(tmp_path, modality, head)
    assert sorted(os.listdir(path)) == sorted(
        ["config.json", "model.safetensors"] + (["tokenizer.model"] if modality == "text" else []))
    loaded, loaded_cfg = load_checkpoint(path)
    assert not loaded.training
    assert loaded_cfg.encoder == cfg.encoder and loaded_cfg.head == cfg.head
    assert loaded_cfg.name == cfg.name and loaded_cfg.provenance == {"test": True}
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x, pad = inputs[modality]
    with torch.no_grad():
        out_a, out_b = model.forward_features(x, pad)[0], loaded.forward_features(x, pad)[0]
        assert torch.equal(out_a, out_b)
        if head:
            assert torch.equal(model(x, pad), loaded(x, pad))
    assert (loaded.head is None) is (not head)


def test_config_json_describes_the_model(tmp_path):
    path, _, _ = _save(tmp_path, "text", head=True)
    data = json.loads((path / "config.json").read_text())
    assert data["format"] == FORMAT and data["format_version"] == 1
    assert data["modality"] == "text" and data["name"] == "tiny-text"
    assert data["head"] == {"type": "first_token", "labels": LABELS, "pooling": "mean", "dropout": 0.0}
    assert data["preprocessing"]["tokenizer"] == "tokenizer.model" and data["preprocessing"]["pad_id"] == 1
    assert read_config(path).to_dict() == data
    assert (path / "tokenizer.model").read_bytes() == b"not really a sentencepiece model"
    image = CheckpointConfig("x", tiny_config("image").encoder).preprocessing
    assert image == {"image_size": 32, "channels": 3, "mean": [0.485, 0.456, 0.406],
                     "std": [0.229, 0.224, 0.225]}


def test_text_without_tokenizer(tmp_path):
    model, cfg = _model("text")
    path = save_checkpoint(tmp_path / "t", model, cfg)
    assert read_config(path).preprocessing["tokenizer"] is None
    load_checkpoint(path)  # nothing to look for


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_fp16_storage(tmp_path, inputs, modality):
    path, model, _ = _save(tmp_path, modality, head=True, dtype=torch.float16)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    assert dtypes == {torch.float16}
    loaded, _ = load_checkpoint(path)
    for k, v in model.state_dict().items():
        w = loaded.state_dict()[k]
        assert w.dtype == torch.float32
        assert torch.equal(w, v.half().float()), k
    x, pad = inputs[modality]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, pad), model(x, pad), atol=1e-2, rtol=1e-2)
    half, _ = load_checkpoint(path, dtype=torch.float16)
    assert all(p.dtype == torch.float16 for p in half.parameters())


def test_atomic_overwrite(tmp_path):
    path, _, _ = _save(tmp_path, "image", seed=0)
    model_b, cfg_b = _model("image", seed=1)
    save_checkpoint(path, model_b, cfg_b)
    loaded, _ = load_checkpoint(path)
    for k, v in model_b.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary or old directories left behind

    # a save that fails part-way leaves the previous checkpoint untouched
    model_c, cfg_c = _model("text", seed=2)
    with pytest.raises(FileNotFoundError):
        save_checkpoint(path, model_c, cfg_c, tokenizer=tmp_path / "missing.model")
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    again, cfg = load_checkpoint(path)
    assert cfg.modality == "image"
    for k, v in model_b.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


# --- broken checkpoints ---------------------------------------------------------------------------


def _edit_config(path, fn):
    f = path / "config.json"
    data = json.loads(f.read_text())
    fn(data)
    f.write_text(json.dumps(data))


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is not a directory"):
        load_checkpoint(tmp_path / "nowhere")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="is not a directory"):
        load_checkpoint(f)


def test_missing_config(tmp_path):
    path, _, _ = _save(tmp_path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_checkpoint(path)


def test_invalid_json(tmp_path):
    path, _, _ = _save(tmp_path)
    (path / "config.json").write_text('{"format": "d2v.checkpoint",')
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        load_checkpoint(path)


def test_wrong_format(tmp_path):
    path, _, _ = _save(tmp_path)
    _edit_config(path, lambda d: d.update(format="hf.transformers"))
    with pytest.raises(CheckpointError, match="not a d2v checkpoint config.*'hf.transformers'"):
        load_checkpoint(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a d2v checkpoint config"):
        load_checkpoint(path)


def test_newer_format_version(tmp_path):
    path, _, _ = _save(tmp_path)
    _edit_config(path, lambda d: d.update(format_version=2))
    with pytest.raises(CheckpointError, match="format_version 2; this d2v reads up to 1"):
        load_checkpoint(path)


def test_invalid_encoder_section(tmp_path):
    path, _, _ = _save(tmp_path)
    _edit_config(path, lambda d: d["encoder"].update(wings=2))
    with pytest.raises(CheckpointError, match="unknown EncoderConfig fields: wings"):
        load_checkpoint(path)
    path, _, _ = _save(tmp_path, name="other")
    _edit_config(path, lambda d: d.update(modality="audio"))
    with pytest.raises(CheckpointError, match="modality 'audio' does not match encoder 'image'"):
        load_checkpoint(path)


def test_missing_weights(tmp_path):
    path, _, _ = _save(tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupted_weights(tmp_path, damage):
    path, _, _ = _save(tmp_path)
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"garbage": b"\x00\x01 this is not safetensors" * 10, "truncated": data[: len(data) // 2],
                   "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        load_checkpoint(path)


def test_missing_keys(tmp_path):
    path, _, _ = _save(tmp_path)
    _edit_config(path, lambda d: d["encoder"].update(depth=3))  # the file holds 2 blocks
    with pytest.raises(CheckpointError, match=r"does not fit its config: missing keys: blocks\.2\."):
        load_checkpoint(path)


def test_unexpected_keys(tmp_path):
    path, _, _ = _save(tmp_path)
    _edit_config(path, lambda d: d["encoder"].update(depth=1))
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.1\.attn\.proj\.bias"):
        load_checkpoint(path)


def test_missing_head(tmp_path):
    path, _, _ = _save(tmp_path)
    _edit_config(path, lambda d: d.update(head={"type": "mean_pool", "labels": ["x", "y"]}))
    with pytest.raises(CheckpointError, match=r"missing keys: head\.fc\.bias, head\.fc\.weight"):
        load_checkpoint(path)


def test_shape_mismatch(tmp_path):
    path, _, _ = _save(tmp_path)
    _edit_config(path, lambda d: d["encoder"].update(embed_dim=64))
    with pytest.raises(CheckpointError, match=r"shape mismatches: blocks\.0\.attn\.proj\.bias: "
                                              r"checkpoint \(32,\) vs model \(64,\)") as e:
        load_checkpoint(path)
    assert "in all)" in str(e.value)  # long lists are cut, with a count


def test_text_tokenizer_named_but_missing(tmp_path):
    path, _, _ = _save(tmp_path, "text")
    (path / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError,
                       match="the tokenizer file 'tokenizer.model' named in config.json is missing"):
        load_checkpoint(path)


BPE = {"kind": "byte_bpe", "files": {"vocab": "vocab.json", "merges": "merges.txt"}}


@pytest.mark.parametrize("field", [
    None, "tokenizer.model", {"kind": "hf_tokenizer", "files": {"tokenizer": "tokenizer.json"}},
    {**BPE, "added_tokens": [{"content": "<mask>", "lstrip": True}], "add_prefix_space": True},
    {"kind": "sentencepiece", "files": {"model": "sentencepiece.bpe.model"}, "ids": "fairseq"},
    {"kind": "fairseq_gpt2", "files": {"dict": "dict.txt", "encoder": "encoder.json", "bpe": "vocab.bpe"}},
])
def test_config_validation_takes_every_form_of_the_tokenizer_field(tmp_path, field):
    path, _, _ = _save(tmp_path, "text")
    _edit_config(path, lambda d: d["preprocessing"].update(tokenizer=field))
    assert read_config(path).preprocessing["tokenizer"] == field


@pytest.mark.parametrize("field,message", [
    ("", "preprocessing.tokenizer must be a file name, an object or null, not ''"),
    (7, "preprocessing.tokenizer must be a file name, an object or null, not int"),
    (["tokenizer.model"], "preprocessing.tokenizer must be a file name, an object or null, not list"),
    ({"kind": "wordpiece", "files": {"vocab": "vocab.txt"}}, "preprocessing.tokenizer.kind is 'wordpiece'"),
    ({"kind": "byte_bpe", "files": {"vocab": "vocab.json"}}, "preprocessing.tokenizer.files must name the byte_bpe"),
    ({**BPE, "files": {"vocab": "vocab.json", "merges": 3}}, "preprocessing.tokenizer.files.merges must be a file"),
    ({**BPE, "lowercase": True}, "preprocessing.tokenizer has unknown keys ['lowercase']"),
    ({**BPE, "ids": "fairseq"}, "preprocessing.tokenizer.ids is 'fairseq'"),
    ({**BPE, "add_prefix_space": "no"}, "preprocessing.tokenizer.add_prefix_space must be true or false"),
])
def test_config_validation_names_a_malformed_tokenizer_field(tmp_path, field, message):
    """read_config checks the field's form with the one parser of it (d2v.tokenizer.TokenizerSpec), so
    every command refuses it before reading any file: one line, the config file and the field."""
    path, _, _ = _save(tmp_path, "text")
    _edit_config(path, lambda d: d["preprocessing"].update(tokenizer=field))
    with pytest.raises(CheckpointError) as e:
        read_config(path)
    assert str(e.value).startswith(f"{path / 'config.json'}: {message}"), str(e.value)
    assert "\n" not in str(e.value)


def test_check_state_dict_lists_every_problem():
    expected = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    found = {"a": torch.zeros(2), "b": torch.zeros(4), "d": torch.zeros(1)}
    with pytest.raises(CheckpointError) as e:
        check_state_dict(expected, found, "w.safetensors")
    msg = str(e.value)
    assert msg.startswith("w.safetensors does not fit its config")
    assert "missing keys: c" in msg and "unexpected keys: d" in msg
    assert "shape mismatches: b: checkpoint (4,) vs model (3,)" in msg
    check_state_dict(expected, dict(expected), "ok")  # no error


def test_saving_does_not_change_the_callers_config(tmp_path):
    """Saving a text model without a tokenizer, then with one, from the same config object: the
    second checkpoint must still name (and check for) its tokenizer file."""
    model, cfg = _model("text")
    save_checkpoint(tmp_path / "a", model, cfg)
    assert cfg.preprocessing["tokenizer"] == "tokenizer.model"
    tok = tmp_path / "spm.model"
    tok.write_bytes(b"spm")
    path = save_checkpoint(tmp_path / "b", model, cfg, tokenizer=tok)
    assert read_config(path).preprocessing["tokenizer"] == "tokenizer.model"
    assert read_config(tmp_path / "a").preprocessing["tokenizer"] is None
    (path / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_checkpoint(path)


def test_ctc_head_and_stored_positions_round_trip(tmp_path, inputs):
    """The new optional config fields survive save/load; without them config.json reads as before."""
    torch.manual_seed(0)
    enc_cfg = tiny_config("image").encoder
    enc_cfg.image.stored_pos_embed = True
    model = build_encoder(enc_cfg).eval()
    with torch.no_grad():
        model.encoders["image"].pos_embed.add_(0.5)  # a stored table is not recomputed
    path = save_checkpoint(tmp_path / "img", model, CheckpointConfig("img", enc_cfg))
    loaded, cfg = load_checkpoint(path)
    assert cfg.encoder.image.stored_pos_embed
    torch.testing.assert_close(loaded.encoders["image"].pos_embed, model.encoders["image"].pos_embed)
    x = inputs["image"][0]
    torch.testing.assert_close(loaded.forward_features(x)[0], model.forward_features(x)[0], rtol=0, atol=0)

    plain = tiny_config("image").encoder
    assert "stored_pos_embed" not in plain.to_dict()["image"]

    audio = tiny_config("audio").encoder
    head = HeadConfig("ctc", ["<pad>", "|", "a", "b"], blank_id=0, word_delimiter="|")
    model = build_encoder(audio, head).eval()
    path = save_checkpoint(tmp_path / "ctc", model, CheckpointConfig("ctc", audio, head))
    data = json.loads((path / "config.json").read_text())
    assert data["head"] == {"type": "ctc", "labels": ["<pad>", "|", "a", "b"], "pooling": "mean", "dropout": 0.0,
                            "blank_id": 0, "word_delimiter": "|", "ignore_ids": []}
    loaded, cfg = load_checkpoint(path)
    assert cfg.head == head
    x, pad = inputs["audio"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, pad), model(x, pad), rtol=0, atol=0)


# --- a kill while a checkpoint (e.g. finetune's best/) is replaced --------------------------------

# Replaces the checkpoint argv[1] with a new model, SIGKILLing itself just before the argv[2]-th
# change of a directory entry (rename, replace, exchange, rmtree). Prints how many there were.
REPLACE_AND_DIE = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path
    import torch
    from d2v import atomic
    from d2v.model.builder import build_encoder
    from d2v.model.checkpoint import read_config, save_checkpoint

    best, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    try:  # what the last run left: cleaned before counting
        from d2v.legacy_temporaries import clean_temporaries
        clean_temporaries(best.parent, [best.name])
    except ImportError:
        pass
    cfg = read_config(best)
    torch.manual_seed(1)
    model = build_encoder(cfg.encoder, cfg.head)
    count = 0

    def dying(fn):
        def wrapped(*args, **kwargs):
            global count
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped

    os.rename, os.replace, shutil.rmtree = dying(os.rename), dying(os.replace), dying(shutil.rmtree)
    if hasattr(atomic, "_exchange"):
        atomic._exchange = dying(atomic._exchange)
    save_checkpoint(best, model, cfg)
    print(count)
""")


def test_a_kill_at_any_step_of_a_replacement_leaves_the_old_or_the_new_checkpoint(tmp_path):
    path, old_model, _ = _save(tmp_path, "image", head=True, name="best")
    old = {k: v.clone() for k, v in old_model.state_dict().items()}
    kill_at, outcomes = 1, []
    while True:
        proc = subprocess.run([sys.executable, "-c", REPLACE_AND_DIE, str(path), str(kill_at)], capture_output=True,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
        loaded, _ = load_checkpoint(path)  # always there, always whole
        state = loaded.state_dict()
        outcomes.append("old" if all(torch.equal(state[k], old[k]) for k in old) else "new")
        if proc.returncode == 0:
            break
        kill_at += 1
    assert outcomes[0] == "old" and outcomes[-1] == "new" and kill_at >= 2
    from d2v.legacy_temporaries import clean_temporaries

    clean_temporaries(tmp_path, ["best"])
    assert sorted(os.listdir(tmp_path)) == ["best"]


# --- weights that load but must not be used -------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    path, model, _ = _save(tmp_path, "image", head=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["blocks.1.attn.qkv.weight"][0, 3] = value
    state["head.fc.bias"][1] = value  # later in name order: the first one is named
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == (f"{path / 'model.safetensors'}: blocks.1.attn.qkv.weight holds 1 non-finite value(s) "
                            f"(NaN or Inf) of {state['blocks.1.attn.qkv.weight'].numel()}; the weights are unusable")


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32, torch.bool, torch.float64])
def test_floats_stored_in_another_dtype_are_refused(tmp_path, dtype):
    path, model, _ = _save(tmp_path, "audio")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = "blocks.0.mlp.fc2.weight"
    state[key] = (state[key] * 100).to(dtype)
    save_file(state, str(path / "model.safetensors"))
    want = str(dtype).removeprefix("torch.")
    with pytest.raises(CheckpointError, match=rf"model.safetensors: {key} is stored as {want}, but the model holds it "
                                              r"as float32 \(floating-point weights must be stored as float16, "
                                              r"bfloat16, float32\)"):
        load_checkpoint(path)


def test_bfloat16_storage_loads(tmp_path, inputs):
    path, model, _ = _save(tmp_path, "text", head=True, dtype=torch.bfloat16)
    loaded, _ = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.bfloat16().float()), k


def test_truncated_by_one_byte_is_named_before_any_model_is_built(tmp_path):
    path, _, _ = _save(tmp_path)
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file: the file is "
                                              "truncated"):
        load_checkpoint(path)


def test_saved_weights_are_readable_by_the_group_and_others(tmp_path):
    """safetensors creates model.safetensors 0o600; a checkpoint must be readable as its config.json is
    (umask 022: 0o644), e.g. by a server running as another user."""
    old = os.umask(0o022)
    try:
        path, _, _ = _save(tmp_path)
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()} == {"config.json": 0o644,
                                                                          "model.safetensors": 0o644}
