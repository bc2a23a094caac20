"""`d2v convert` of HuggingFace Data2VecText / Data2VecAudio: tiny random HF models saved both as
safetensors and as pytorch_model.bin, converted, reloaded, and compared with HF on real inputs
(WordNet glosses as byte tokens, espeak-ng speech)."""

import argparse
import json

import pytest
import torch
from realdata import byte_tokens, pad_waveforms
from safetensors.torch import load_file

from d2v.model.checkpoint import CheckpointError, load_checkpoint
from d2v.model.encoders.audio import normalize_waveform
from d2v.model.importers import (
    ConversionWarning,
    add_convert_arguments,
    convert,
    map_hf,
    run_convert,
)

transformers = pytest.importorskip("transformers")

VOCAB, PAD = 96, 1
TOL = 1e-5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # HF's own initialization


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Perturb every parameter, so LayerNorm gains/biases and zero-initialized biases are distinct and
    a swapped mapping cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _text_config(**overrides) -> "transformers.Data2VecTextConfig":
    return transformers.Data2VecTextConfig(**{
        "vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 64, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
        "pad_token_id": PAD, "bos_token_id": 0, "eos_token_id": 2, "attn_implementation": "eager", **overrides,
    })


def _audio_config(**overrides) -> "transformers.Data2VecAudioConfig":
    return transformers.Data2VecAudioConfig(**{
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (32, 32, 32), "conv_kernel": (10, 3, 3), "conv_stride": (5, 2, 2), "num_conv_pos_embeddings": 2,
        "conv_pos_kernel_size": 5, "num_conv_pos_embedding_groups": 2, "attn_implementation": "eager", **overrides,
    })


def _save(model: torch.nn.Module, path, fmt: str = "safetensors"):
    """Randomize, switch to eval and save as "safetensors", "sharded" safetensors or a pickled "bin"
    (what transformers < 5 wrote with safe_serialization=False)."""
    _randomize(model)
    model.eval()
    model.save_pretrained(path, max_shard_size="20KB" if fmt == "sharded" else "50GB")
    if fmt == "bin":
        (path / "model.safetensors").unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return model


def _text_parity(hf_model: torch.nn.Module, ckpt, texts: list[str]) -> float:
    """Max |HF - d2v| over the real tokens of a padded batch."""
    model, _ = load_checkpoint(ckpt)
    ids = byte_tokens(texts, VOCAB, pad_id=PAD)  # (B, T)
    with torch.no_grad():
        ref = hf_model(input_ids=ids, attention_mask=ids.ne(PAD).long()).last_hidden_state
        out, padding = model.forward_features(ids)
    assert torch.equal(padding, ids.eq(PAD))
    return (out - ref)[~padding].abs().max().item()


WEIGHT_FILES = {"safetensors": "model.safetensors", "sharded": "model.safetensors.index.json",
                "bin": "pytorch_model.bin"}


@pytest.mark.parametrize("fmt", list(WEIGHT_FILES))
def test_text_parity(tmp_path, glosses, fmt):
    hf = _save(transformers.Data2VecTextModel(_text_config()), tmp_path / "hf", fmt)
    assert (tmp_path / "hf" / WEIGHT_FILES[fmt]).is_file()
    with pytest.warns(ConversionWarning, match="token ids only"):
        convert(tmp_path / "hf", tmp_path / "d2v")
    assert _text_parity(hf, tmp_path / "d2v", glosses[:8]) < TOL


def test_text_token_type_is_folded(tmp_path, glosses):
    """A checkpoint with two token types keeps type 0 (what HF uses by default) and says so."""
    hf = _save(transformers.Data2VecTextModel(_text_config(type_vocab_size=2)),
               tmp_path / "hf")
    with pytest.warns(ConversionWarning) as caught:
        convert(tmp_path / "hf", tmp_path / "d2v")
    assert any("only type 0" in str(w.message) for w in caught)
    assert _text_parity(hf, tmp_path / "d2v", glosses[8:16]) < TOL


def test_text_config_and_preprocessing(tmp_path):
    _save(transformers.Data2VecTextModel(_text_config(bos_token_id=5, eos_token_id=6, hidden_dropout_prob=0.2,
                                                      attention_probs_dropout_prob=0.3)), tmp_path / "hf")
    with pytest.warns(ConversionWarning):
        convert(tmp_path / "hf", tmp_path / "d2v", name="tiny-text")
    _, cfg = load_checkpoint(tmp_path / "d2v")
    enc = cfg.encoder
    assert cfg.name == "tiny-text"
    assert (enc.embed_dim, enc.depth, enc.num_heads, enc.mlp_ratio, enc.prenet_depth) == (32, 2, 2, 2.0, 0)
    assert (enc.text.vocab_size, enc.text.pad_id, enc.text.max_positions) == (VOCAB, PAD, 64 - PAD - 1)
    assert (enc.dropout, enc.post_mlp_dropout, enc.attention_dropout) == (0.2, 0.2, 0.3)
    pre = cfg.preprocessing
    assert (pre["tokenizer"], pre["bos_id"], pre["pad_id"], pre["eos_id"], pre["max_tokens"]) == (None, 5, 1, 6, 62)
    prov = cfg.provenance
    assert prov["command"] == "d2v convert" and prov["source"] == str(tmp_path / "hf")
    assert prov["source_model_type"] == "data2vec-text" and prov["converted_at"]


def test_text_sequence_classification(tmp_path, glosses):
    """The classification head is kept (first_token: dense, tanh, out_proj) with id2label's labels."""
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    config = _text_config(num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    hf = _save(transformers.Data2VecTextForSequenceClassification(config), tmp_path / "hf")
    with pytest.warns(ConversionWarning, match="token ids only"):
        convert(tmp_path / "hf", tmp_path / "d2v")
    model, cfg = load_checkpoint(tmp_path / "d2v")
    assert (cfg.head.type, cfg.head.labels, cfg.head.pooling) == ("first_token", list(labels.values()), "cls")
    assert _text_parity(hf.data2vec_text, tmp_path / "d2v", glosses[:4]) < TOL
    ids = byte_tokens(glosses[:6], VOCAB, pad_id=PAD)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=ids.ne(PAD).long()).logits
        out = model.forward_head(*model.forward_features(ids))
    assert (out - ref).abs().max().item() < TOL


def test_labels_override_and_count(tmp_path):
    _save(transformers.Data2VecTextForSequenceClassification(_text_config(num_labels=2)), tmp_path / "hf")
    with pytest.warns(ConversionWarning):
        convert(tmp_path / "hf", tmp_path / "d2v", labels=["no", "yes"])
    assert load_checkpoint(tmp_path / "d2v")[1].head.labels == ["no", "yes"]
    with pytest.raises(ValueError, match="3 labels given but the classifier has 2 classes"):
        convert(tmp_path / "hf", tmp_path / "other", labels=["a", "b", "c"])
    assert not (tmp_path / "other").exists()


def test_other_heads_are_dropped_with_a_warning(tmp_path):
    _save(transformers.Data2VecTextForMaskedLM(_text_config()), tmp_path / "hf")
    with pytest.warns(ConversionWarning) as caught:
        convert(tmp_path / "hf", tmp_path / "d2v")
    assert any("Data2VecTextForMaskedLM head (lm_head) is dropped" in str(w.message) for w in caught)
    assert load_checkpoint(tmp_path / "d2v")[1].head is None


def _audio_parity(hf_model: torch.nn.Module, ckpt, wavs) -> float:
    """Max |HF - d2v| over real frames: d2v runs the padded batch of all clips; HF runs each clip alone
    (its padded batches let padding into the positional convolution), fed the waveform exactly as d2v normalizes it."""
    model, _ = load_checkpoint(ckpt)
    x, pad = pad_waveforms(wavs)  # (B, L)
    with torch.no_grad():
        out, frames = model.forward_features(x, pad)  # (B, T, D), (B, T)
        normalized = normalize_waveform(x, pad)  # (B, L)
        worst = 0.0
        for i, w in enumerate(wavs):
            ref = hf_model(normalized[i : i + 1, : len(w)]).last_hidden_state[0]  # (T_i, D)
            assert int((~frames[i]).sum()) == ref.shape[0]
            worst = max(worst, (out[i, : ref.shape[0]] - ref).abs().max().item())
    return worst


@pytest.mark.parametrize("fmt,conv_bias", [("safetensors", True), ("bin", False)], ids=["safetensors", "bin"])
def test_audio_parity(tmp_path, spoken_digits, fmt, conv_bias):
    hf = _save(transformers.Data2VecAudioModel(_audio_config(conv_bias=conv_bias)), tmp_path / "hf", fmt)
    assert (tmp_path / "hf" / WEIGHT_FILES[fmt]).is_file()
    convert(tmp_path / "hf", tmp_path / "d2v")
    _, cfg = load_checkpoint(tmp_path / "d2v")
    a = cfg.encoder.audio
    assert a.conv_layers == [[32, 10, 5], [32, 3, 2], [32, 3, 2]] and a.conv_bias == conv_bias
    assert (a.conv_pos_depth, a.conv_pos_kernel, a.conv_pos_groups, a.use_alibi) == (2, 5, 2, False)
    assert a.normalize and cfg.preprocessing == {"sample_rate": 16000, "normalize": True}
    assert _audio_parity(hf, tmp_path / "d2v", spoken_digits) < TOL


def test_audio_ctc_with_preprocessor_config(tmp_path, spoken_digits):
    """Without vocab.json a CTC checkpoint converts as an encoder (prefix stripped, lm_head dropped with
    a warning); do_normalize comes from the preprocessor config."""
    hf = _save(transformers.Data2VecAudioForCTC(_audio_config(vocab_size=12)),
               tmp_path / "hf")
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False,
                                                                          "sampling_rate": 16000}))
    with pytest.warns(ConversionWarning, match="no vocab.json"):
        convert(tmp_path / "hf", tmp_path / "d2v")
    model, cfg = load_checkpoint(tmp_path / "d2v")
    assert cfg.head is None
    assert cfg.encoder.audio.normalize is False and cfg.preprocessing["normalize"] is False
    wav = torch.from_numpy(spoken_digits[0])[None]  # (1, L), fed as is to both
    with torch.no_grad():
        ref = hf.data2vec_audio(wav).last_hidden_state
        out, _ = model.forward_features(wav)
    assert (out - ref).abs().max().item() < TOL


def _per_clip(hf_model, ckpt, wavs):
    """d2v on the padded batch of all clips; HF on each clip alone, fed the waveform as d2v normalizes
    it. Returns [(d2v output, HF output)] per clip: logits (C,) or emissions (T_i, V) over real frames."""
    model, _ = load_checkpoint(ckpt)
    x, pad = pad_waveforms(wavs)
    pairs = []
    with torch.no_grad():
        tokens, frames = model.forward_features(x, pad)
        out = model.forward_head(tokens, frames)
        normalized = normalize_waveform(x, pad)
        for i, w in enumerate(wavs):
            ref = hf_model(normalized[i : i + 1, : len(w)]).logits[0]
            pairs.append((out[i, : ref.shape[0]] if out.dim() == 3 else out[i], ref))
    return pairs, out, frames


def test_audio_sequence_classification(tmp_path, spoken_digits):
    """projector + classifier over the mean of the real frames (mean_linear head), id2label's labels."""
    labels = {0: "zero", 1: "one", 2: "two", 3: "three"}
    config = _audio_config(num_labels=4, id2label=labels, label2id={v: k for k, v in labels.items()},
                           classifier_proj_size=24)
    hf = _save(transformers.Data2VecAudioForSequenceClassification(config), tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "d2v")
    _, cfg = load_checkpoint(tmp_path / "d2v")
    assert (cfg.head.type, cfg.head.labels, cfg.head.projection_dim) == ("mean_linear", list(labels.values()), 24)
    pairs, _, _ = _per_clip(hf, tmp_path / "d2v", spoken_digits)
    assert max((a - b).abs().max().item() for a, b in pairs) < TOL


def test_weighted_layer_sum_is_refused(tmp_path):
    _save(transformers.Data2VecAudioForSequenceClassification(_audio_config(use_weighted_layer_sum=True)),
          tmp_path / "hf")
    with pytest.raises(ValueError, match="use_weighted_layer_sum=True is not supported"):
        convert(tmp_path / "hf", tmp_path / "d2v")
    assert not (tmp_path / "d2v").exists()


CTC_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R"]


def test_audio_ctc_head(tmp_path, spoken_digits):
    """lm_head and vocab.json become a ctc head (the pad token is the blank); emissions and greedy
    transcripts equal HF's (HF's double spaces from repeated delimiters collapsed)."""
    from d2v.ctc import CTCVocabulary, greedy_decode

    config = _audio_config(vocab_size=len(CTC_VOCAB), pad_token_id=0)
    hf = _save(transformers.Data2VecAudioForCTC(config), tmp_path / "hf")
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(CTC_VOCAB)}))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(tmp_path / "hf" / "vocab.json"))
    tokenizer.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "d2v")
    _, cfg = load_checkpoint(tmp_path / "d2v")
    assert (cfg.head.type, cfg.head.labels, cfg.head.blank_id, cfg.head.word_delimiter) == ("ctc", CTC_VOCAB, 0, "|")
    pairs, batch, frames = _per_clip(hf, tmp_path / "d2v", spoken_digits)
    assert max((a - b).abs().max().item() for a, b in pairs) < TOL
    ours = greedy_decode(batch.numpy(), CTCVocabulary.from_head(cfg.head.to_dict()), padding_mask=frames.numpy())
    theirs = [" ".join(tokenizer.decode(ref.argmax(-1)).split()) for _, ref in pairs]
    assert ours == theirs and any(ours)


def test_dtype_is_stored(tmp_path):
    _save(transformers.Data2VecAudioModel(_audio_config()), tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "d2v", dtype="float16")
    weights = load_file(str(tmp_path / "d2v" / "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.float16}


def test_vision_is_refused(tmp_path):
    cfg = transformers.Data2VecVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=64, image_size=32, patch_size=16)
    transformers.Data2VecVisionModel(cfg).save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="pre-LN"):
        convert(tmp_path / "hf", tmp_path / "d2v")
    assert not (tmp_path / "d2v").exists()


@pytest.mark.parametrize("config,error", [
    ({}, "no model_type"),
    ({"model_type": "bert"}, "unsupported HF model_type 'bert'"),
    ({**_text_config(hidden_act="relu").to_dict()}, "hidden_act='relu'"),
])
def test_unsupported_configs(config, error):
    with pytest.raises(ValueError, match=error):
        map_hf(config, {})


def test_missing_and_leftover_weights():
    hf = transformers.Data2VecTextModel(_text_config())
    config, state = hf.config.to_dict(), hf.state_dict()
    map_hf(config, state)  # the pooler is ignored
    with pytest.raises(CheckpointError, match="missing key 'encoder.layer.1.output.dense.bias'"):
        map_hf(config, {k: v for k, v in state.items() if k != "encoder.layer.1.output.dense.bias"})
    with pytest.raises(CheckpointError, match="unexpected keys encoder.layer.2.output.dense.weight"):
        map_hf(config, {**state, "encoder.layer.2.output.dense.weight": torch.zeros(32, 64)})


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="d2v convert")
    add_convert_arguments(parser)
    return run_convert(parser.parse_args(argv))


def test_cli(tmp_path, capsys, spoken_digits):
    hf = _save(transformers.Data2VecAudioModel(_audio_config()), tmp_path / "hf")
    assert _run([str(tmp_path / "hf"), "--out", str(tmp_path / "d2v"), "--name", "speech"]) == 0
    assert str(tmp_path / "d2v") in capsys.readouterr().out
    _, cfg = load_checkpoint(tmp_path / "d2v")
    assert cfg.name == "speech"
    assert _audio_parity(hf, tmp_path / "d2v", spoken_digits[:2]) < TOL
    assert _run([str(tmp_path / "hf"), "--out", str(tmp_path / "d2v")]) == 0  # replaces its own checkpoint


def test_cli_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _run([str(tmp_path / "empty"), "--out", str(tmp_path / "d2v")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("d2v convert: error:") and "config.json is missing" in err and err.count("\n") == 1

    _save(transformers.Data2VecAudioModel(_audio_config()), tmp_path / "hf")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("precious")
    assert _run([str(tmp_path / "hf"), "--out", str(tmp_path / "notes")]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert (tmp_path / "notes" / "keep.txt").read_text() == "precious"

    spm_file = tmp_path / "tok.model"
    spm_file.write_text("not a tokenizer")
    assert _run([str(tmp_path / "hf"), "--out", str(tmp_path / "d2v"), "--tokenizer", str(spm_file)]) == 2
    assert "text models only" in capsys.readouterr().err


def test_cli_text_tokenizer(tmp_path, capsys, glosses):
    spm = pytest.importorskip("sentencepiece")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(glosses), model_prefix=str(tmp_path / "tok"),
                                   vocab_size=80, bos_id=0, pad_id=1, eos_id=2, unk_id=3,
                                   character_coverage=1.0, minloglevel=2)
    _save(transformers.Data2VecTextModel(_text_config()), tmp_path / "hf")
    argv = [str(tmp_path / "hf"), "--out", str(tmp_path / "d2v"), "--tokenizer", str(tmp_path / "tok.model")]
    assert _run(argv) == 0
    assert "warning" not in capsys.readouterr().err
    _, cfg = load_checkpoint(tmp_path / "d2v")
    assert cfg.preprocessing["tokenizer"] == "tokenizer.model" and (tmp_path / "d2v" / "tokenizer.model").is_file()

    assert _run([str(tmp_path / "hf"), "--out", str(tmp_path / "ids")]) == 0
    assert "warning: no tokenizer given" in capsys.readouterr().err


# ---- tokenizers: picked up from the HF directory or named with --tokenizer, ids equal to transformers'

BPE_VOCAB, SPM_VOCAB = 400, 300


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> dict:
    """A byte-level BPE (RoBERTa files and tokenizer.json), the same as fairseq dict.txt + GPT-2 files,
    and an XLM-R-style sentencepiece model, all trained here."""
    from texts import fairseq_files_from_roberta, train_byte_bpe, train_xlmr_sentencepiece

    root = tmp_path_factory.mktemp("tok")
    bpe = train_byte_bpe(root / "bpe", vocab_size=BPE_VOCAB)
    return {"bpe": bpe, "fairseq": fairseq_files_from_roberta(bpe / "vocab.json", bpe / "merges.txt", root / "fq"),
            "spm": train_xlmr_sentencepiece(root / "xlmr" / "sentencepiece.bpe.model", vocab_size=SPM_VOCAB)}


def _hf_text_dir(path, vocab: int, files=(), **config):
    """A tiny random HF Data2VecText directory holding `files` (copied in)."""
    import shutil

    _save(transformers.Data2VecTextModel(_text_config(vocab_size=vocab, **config)), path)
    for f in files:
        shutil.copy(f, path / f.name)
    return path


LAYOUTS = {
    "tokenizer.json": (lambda t: [t["bpe"] / "tokenizer.json"], "hf_tokenizer", BPE_VOCAB),
    "vocab.json + merges.txt": (lambda t: [t["bpe"] / "vocab.json", t["bpe"] / "merges.txt"], "byte_bpe", BPE_VOCAB),
    "sentencepiece.bpe.model": (lambda t: [t["spm"]], "sentencepiece", SPM_VOCAB + 2),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_convert_picks_up_the_directory_tokenizer(tmp_path, tokenizer_files, glosses, layout, capsys):
    from d2v.tokenizer import load_tokenizer

    files, kind, vocab = LAYOUTS[layout]
    hf_dir = _hf_text_dir(tmp_path / "hf", vocab, files(tokenizer_files))
    if layout == "sentencepiece.bpe.model":  # transformers knows XLM-R's tokenizer by its model type
        cfg = json.loads((hf_dir / "config.json").read_text())
        (hf_dir / "config.json").write_text(json.dumps({**cfg, "model_type": "xlm-roberta"}))
        hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
        (hf_dir / "config.json").write_text(json.dumps(cfg))
    else:
        hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert _run([str(hf_dir), "--out", str(tmp_path / "d2v")]) == 0
    assert "warning" not in capsys.readouterr().err
    _, ckpt = load_checkpoint(tmp_path / "d2v")
    field = ckpt.preprocessing["tokenizer"]
    assert field["kind"] == kind
    assert sorted(p.name for p in (tmp_path / "d2v").iterdir()) == sorted(
        ["config.json", "model.safetensors", *field["files"].values()])
    ours = load_tokenizer(tmp_path / "d2v", ckpt.preprocessing, ckpt.encoder.text.vocab_size)
    texts = [*glosses[:20], "<s> literal </s> and <mask>", "  tabs\tand\nnewlines  ", "日本語 😀", ""]
    for text in texts:
        assert ours.encode(text, 62) == hf_tok(text, truncation=True, max_length=62)["input_ids"], text


def test_xlmr_sentencepiece_gets_fairseq_ids(tmp_path, tokenizer_files, glosses):
    """XLM-R's sentencepiece model numbers its pieces one below the model's ids (fairseq's offset):
    it is mapped, not accepted as it is with a warning."""
    import sentencepiece as spm

    hf_dir = _hf_text_dir(tmp_path / "hf", SPM_VOCAB + 2)
    assert _run([str(hf_dir), "--out", str(tmp_path / "d2v"), "--tokenizer", str(tokenizer_files["spm"])]) == 0
    _, ckpt = load_checkpoint(tmp_path / "d2v")
    assert ckpt.preprocessing["tokenizer"]["ids"] == "fairseq"
    from d2v.tokenizer import load_tokenizer

    ours = load_tokenizer(tmp_path / "d2v", ckpt.preprocessing, SPM_VOCAB + 2)
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_files["spm"]))
    for text in glosses[:10]:
        assert ours.encode(text) == [0, *(i + 1 if i else 3 for i in sp.encode(text)), 2]


@pytest.mark.parametrize("form", ["directory", "vocab.json + merges.txt", "tokenizer.json",
                                  "dict.txt + encoder.json + vocab.bpe"])
def test_tokenizer_flag_forms(tmp_path, tokenizer_files, glosses, form):
    bpe, fq = tokenizer_files["bpe"], tokenizer_files["fairseq"]
    paths = {"directory": [bpe], "vocab.json + merges.txt": [bpe / "merges.txt", bpe / "vocab.json"],
             "tokenizer.json": [bpe / "tokenizer.json"],
             "dict.txt + encoder.json + vocab.bpe": [fq / "vocab.bpe", fq / "dict.txt", fq / "encoder.json"]}[form]
    hf_dir = _hf_text_dir(tmp_path / "hf", BPE_VOCAB)
    argv = [str(hf_dir), "--out", str(tmp_path / "d2v")]
    for p in paths:
        argv += ["--tokenizer", str(p)]
    assert _run(argv) == 0
    from d2v.tokenizer import load_tokenizer

    _, ckpt = load_checkpoint(tmp_path / "d2v")
    kind = {"directory": "hf_tokenizer", "tokenizer.json": "hf_tokenizer", "vocab.json + merges.txt": "byte_bpe",
            "dict.txt + encoder.json + vocab.bpe": "fairseq_gpt2"}[form]
    assert ckpt.preprocessing["tokenizer"]["kind"] == kind
    ours = load_tokenizer(tmp_path / "d2v", ckpt.preprocessing, BPE_VOCAB)
    roberta = transformers.AutoTokenizer.from_pretrained(_hf_text_dir(tmp_path / "ref", BPE_VOCAB,
                                                                      [bpe / "vocab.json", bpe / "merges.txt"]))
    for text in glosses[:10]:
        assert ours.encode(text) == roberta(text)["input_ids"]


def test_a_tokenizer_whose_ids_are_not_the_models_is_refused(tmp_path, tokenizer_files, capsys):
    bpe = tokenizer_files["bpe"]
    small = _hf_text_dir(tmp_path / "small", BPE_VOCAB - 50)
    other_pad = _hf_text_dir(tmp_path / "pad", BPE_VOCAB, [bpe / "tokenizer.json"], pad_token_id=4)
    capsys.readouterr()  # transformers' own output while saving
    assert _run([str(small), "--out", str(tmp_path / "a"), "--tokenizer", str(bpe / "tokenizer.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("d2v convert: error:") and err.count("\n") == 1
    assert f"produces ids up to {BPE_VOCAB - 1} but the model embeds only {BPE_VOCAB - 50}" in err
    assert _run([str(other_pad), "--out", str(tmp_path / "b")]) == 2  # the directory's own tokenizer
    err = capsys.readouterr().err
    assert "special ids are not the model's: <pad> 1 (model 4)" in err and err.count("\n") == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert _run([str(small), "--out", str(tmp_path / "c"), "--tokenizer", str(bpe / "vocab.json")]) == 2
    assert "a vocab.json needs its merges.txt" in capsys.readouterr().err
