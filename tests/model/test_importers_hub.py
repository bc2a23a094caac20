"""`d2v convert org/name`: a model id resolved offline in a HuggingFace cache that the test lays out
(models--org--name/refs/main + snapshots/<rev>/, files as symlinks to blobs, as huggingface_hub does)."""

import argparse
import shutil

import pytest
import torch

from d2v.model.checkpoint import CheckpointError, load_checkpoint
from d2v.model.importers import add_convert_arguments, convert, run_convert
from d2v.model.importers.hub import hub_cache_dir, is_hub_id, resolve_hub_id

transformers = pytest.importorskip("transformers")
REV = "0123456789abcdef0123456789abcdef01234567"


def _cache(root, model_id: str = "acme/tiny-speech", ref: bool = True):
    """A tiny HF Data2VecAudio model in huggingface_hub's cache layout under `root`."""
    torch.manual_seed(0)
    cfg = transformers.Data2VecAudioConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32),
        conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=2, conv_pos_kernel_size=5,
        num_conv_pos_embedding_groups=2)
    saved = root / "saved"
    transformers.Data2VecAudioModel(cfg).save_pretrained(saved)
    org, name = model_id.split("/")
    repo = root / f"models--{org}--{name}"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    for f in saved.iterdir():
        blob = repo / "blobs" / f"blob-{f.name}"
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(blob)
    if ref:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(REV)
    return snapshot


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"


def test_model_id_from_hf_home(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snapshot = _cache(tmp_path / "hf" / "hub")
    assert resolve_hub_id("acme/tiny-speech") == snapshot
    monkeypatch.chdir(tmp_path)  # "acme/tiny-speech" is not a path here
    convert("acme/tiny-speech", tmp_path / "d2v")
    _, cfg = load_checkpoint(tmp_path / "d2v")
    assert cfg.name == "tiny-speech" and cfg.encoder.depth == 1
    assert cfg.provenance["source"] == "acme/tiny-speech" and cfg.provenance["resolved"] == str(snapshot)


def test_lone_snapshot_without_refs(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    snapshot = _cache(tmp_path / "cache", ref=False)
    assert resolve_hub_id("acme/tiny-speech") == snapshot


def test_missing_model_says_where_it_looked(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_convert_arguments(parser)
    assert run_convert(parser.parse_args(["facebook/data2vec-audio-base", "--out", str(tmp_path / "d2v")])) == 2
    err = capsys.readouterr().err
    expected = tmp_path / "hf" / "hub" / "models--facebook--data2vec-audio-base"
    assert err.count("\n") == 1 and "nor a model in the local HuggingFace cache" in err and str(expected) in err
    assert not (tmp_path / "d2v").exists()


def test_ids():
    assert is_hub_id("facebook/data2vec-audio-base-960h") and is_hub_id("a/b.c_d")
    for bad in ("model", "a/b/c", "../x", "a/..", "/abs/path", "a/ b"):
        assert not is_hub_id(bad)
    with pytest.raises(CheckpointError, match="not a HuggingFace model id"):
        resolve_hub_id("a/b/c")
