"""End to end with a real tokenizer: a tiny random HF Data2VecText directory holding a byte-level BPE
(RoBERTa's vocab.json + merges.txt, trained here) is converted (the tokenizer picked up by itself),
exported, and served by a real `d2v serve` process; `/embed` of text equals transformers'
Data2VecTextModel mean over the tokens AutoTokenizer feeds it. The same model converted without a
tokenizer is served too and takes token ids (`/embed` and `/v1/embeddings`, OpenAI's convention),
validated with 400/413 naming the input."""

import shutil

import httpx
import numpy as np
import pytest
import torch
from harness import Server
from texts import train_byte_bpe, wordnet_glosses

from d2v.cli import main

transformers = pytest.importorskip("transformers")

VOCAB, MAX_POSITIONS = 400, 64
LIMIT = MAX_POSITIONS - 2  # the d2v token limit: positions after the pad offset
TOL = 1e-5


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> dict:
    """The HF directory, its model and AutoTokenizer, and the d2v checkpoints and export."""
    root = tmp_path_factory.mktemp("e2e")
    bpe = train_byte_bpe(root / "bpe", vocab_size=VOCAB)
    torch.manual_seed(0)
    config = transformers.Data2VecTextConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, attn_implementation="eager")
    model = transformers.Data2VecTextModel(config, add_pooling_layer=False)
    with torch.no_grad():  # off its init, so that a wrong mapping cannot go unnoticed
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.eval().save_pretrained(root / "hf")
    bare = root / "hf-bare"
    shutil.copytree(root / "hf", bare)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe / name, root / "hf" / name)
    assert main(["convert", str(root / "hf"), "--out", str(root / "bpe-ckpt")]) == 0
    assert main(["convert", str(bare), "--out", str(root / "ids-ckpt")]) == 0
    assert main(["export", str(root / "bpe-ckpt"), "--out", str(root / "bpe-onnx")]) == 0
    return {"model": model, "tokenizer": transformers.AutoTokenizer.from_pretrained(root / "hf"),
            "bpe": root / "bpe-ckpt", "ids": root / "ids-ckpt", "onnx": root / "bpe-onnx"}


@pytest.fixture(scope="module")
def client(hf):
    s = Server(["--model", f"bpe={hf['bpe']}", "--model", f"ids={hf['ids']}", "--model", f"onnx={hf['onnx']}",
                "--max-wait-ms", "5"])
    with httpx.Client(base_url=s.url, timeout=60) as c:
        yield c
    s.stop()


def _texts() -> list[str]:
    glosses = wordnet_glosses(40)
    return [glosses[0], glosses[7], "  Naïve <mask> café\tand\nnewlines  ", "日本語のテキスト 😀👍🏽",
            "<s>literal specials</s>", " ".join(glosses[:10])]  # the last one is cut at the limit


def _reference(hf, texts: list[str]) -> tuple[np.ndarray, list[list[int]]]:
    """transformers' mean over the tokens AutoTokenizer feeds it, one text at a time; and those ids."""
    rows, ids = [], []
    for text in texts:
        enc = hf["tokenizer"](text, truncation=True, max_length=LIMIT)["input_ids"]
        with torch.no_grad():
            out = hf["model"](input_ids=torch.tensor([enc])).last_hidden_state
        rows.append(out[0].mean(0).numpy())
        ids.append(enc)
    return np.stack(rows), ids


def _embed(client, model: str, inputs, route: str = "/embed", **kw) -> np.ndarray:
    if route == "/embed":
        r = client.post(route, json={"model": model, "inputs": inputs, "normalize": False, **kw})
    else:
        r = client.post(route, json={"model": model, "input": inputs, **kw})
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float64)


def test_text_embeddings_equal_transformers(hf, client):
    texts = _texts()
    ref, ids = _reference(hf, texts)
    assert len(ids[-1]) == LIMIT  # truncation is exercised
    got = _embed(client, "bpe", texts)  # one padded batch
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    onnx = _embed(client, "onnx", texts)  # the export carries the tokenizer files
    np.testing.assert_allclose(onnx, ref, atol=1e-4, rtol=0)


def test_a_model_without_tokenizer_takes_token_ids(hf, client):
    texts = _texts()
    ref, ids = _reference(hf, texts)
    np.testing.assert_allclose(_embed(client, "ids", ids), ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(_embed(client, "ids", ids[0]), ref[:1], atol=TOL, rtol=0)  # one list of ints
    # a model with a tokenizer takes both, and they agree
    np.testing.assert_allclose(_embed(client, "bpe", [texts[1], ids[1]]), ref[[1, 1]], atol=TOL, rtol=0)
    # OpenAI's shapes: a list of ints is one input, a list of lists several (normalized vectors)
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(_embed(client, "ids", ids[2], "/v1/embeddings"), unit[2:3], atol=TOL, rtol=0)
    np.testing.assert_allclose(_embed(client, "ids", ids[:3], "/v1/embeddings"), unit[:3], atol=TOL, rtol=0)
    r = client.post("/v1/embeddings", json={"model": "ids", "input": ids[0]})
    assert r.json()["usage"] == {"prompt_tokens": len(ids[0]), "total_tokens": len(ids[0])}


def test_token_ids_are_validated(hf, client):
    _, ids = _reference(hf, _texts()[:1])
    good = ids[0]

    def post(inputs, route="/embed", **kw):
        key = "inputs" if route == "/embed" else "input"
        return client.post(route, json={"model": "ids", key: inputs, **kw})

    cases = [
        ([good, [0, VOCAB, 2]], 400, f"input 1: token id {VOCAB} is outside the model's vocabulary [0, {VOCAB})"),
        ([good, [0, -1, 2]], 400, "input 1: token id -1 is outside"),
        ([[]], 400, "input 0: empty list of token ids"),
        ([[0, 5, 1, 6, 2]], 400, "input 0: token id 1 is the padding id"),
        (["a sentence"], 400, "input 0: this model has no tokenizer: send token ids"),
        ([[0, *[5] * 80, 2]], 413, f"input 0: 82 token ids exceed the limit of {LIMIT}"),
        ([[0, 1.5, 2]], 422, None),
        ([[0, True, 2]], 422, None),
    ]
    for inputs, status, message in cases:
        kw = {"truncate": False} if status == 413 else {}
        r = post(inputs, **kw)
        assert r.status_code == status, (inputs, r.text)
        if message:
            assert message in r.json()["error"]["message"], r.text
    r = post([0, VOCAB + 5, 2], "/v1/embeddings")
    assert r.status_code == 400 and "input 0: token id" in r.text
    # truncation keeps a final </s>, as the tokenizer's own truncation does
    long = [0, *range(5, 5 + 100), 2]
    cut = [0, *range(5, 5 + LIMIT - 2), 2]
    np.testing.assert_allclose(_embed(client, "ids", [long]), _embed(client, "ids", [cut]), atol=1e-6, rtol=0)
