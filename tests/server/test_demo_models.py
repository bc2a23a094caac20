"""The bundled demo models, served by `d2v serve` with no arguments, score on real inputs what their
provenance records: training, the checkpoint and the server's decoding agree end to end. The speech
recognizer is served too (it has no classification labels) and scores its recorded held-out WER
over /transcribe."""

import base64
import json
from pathlib import Path

import httpx
import pytest
from media import spoken

import d2v
from d2v.training.data.demo import build_digits, build_spoken_commands, build_wordnet
from d2v.training.data.transcripts import normalize_transcript
from d2v.wer import ErrorCounts

MODELS = Path(d2v.__file__).resolve().parents[1] / "models"
NAMES = ["digits-image", "spoken-commands-ctc", "spoken-digits-audio", "wordnet-text"]


def recorded(name: str) -> float:
    return json.loads((MODELS / name / "config.json").read_text())["provenance"]["metrics"]["test_accuracy"]


def accuracy(url: str, model: str, inputs: list[str], labels: list[str]) -> float:
    right = 0
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(0, len(inputs), 64):
            r = client.post("/classify", json={"model": model, "inputs": inputs[i:i + 64], "top_k": 1})
            assert r.status_code == 200, r.text
            right += sum(d["predictions"][0]["label"] == y for d, y in zip(r.json()["data"], labels[i:i + 64],
                                                                           strict=True))
    return right / len(inputs)


def test_serve_without_arguments_loads_the_demo_models(demo_server):
    models = {m["name"]: m for m in httpx.get(demo_server.url + "/models").json()["data"]}
    assert sorted(models) == NAMES
    assert models["digits-image"]["labels"] == [str(i) for i in range(10)]
    assert models["spoken-commands-ctc"]["labels"] is None  # a recognizer: its vocabulary is not classes
    r = httpx.post(demo_server.url + "/embed", json={"model": "spoken-commands-ctc",
                                                     "inputs": [base64.b64encode(spoken("stop")).decode()]})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 64
    assert httpx.get(demo_server.url + "/health").status_code == 200


def test_digits_score_the_recorded_test_accuracy(demo_server, tmp_path):
    root = build_digits(tmp_path / "digits")  # the same split as `d2v data` (seed 0)
    files = sorted((root / "test").glob("*/*.png"))
    inputs = [base64.b64encode(f.read_bytes()).decode() for f in files]
    acc = accuracy(demo_server.url, "digits-image", inputs, [f.parent.name for f in files])
    assert len(files) == 359 and acc == pytest.approx(recorded("digits-image"), abs=0.01)


def test_wordnet_glosses_score_the_recorded_test_accuracy(demo_server, tmp_path):
    root = build_wordnet(tmp_path / "wordnet", unlabelled=0)
    rows = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()]
    acc = accuracy(demo_server.url, "wordnet-text", [r["text"] for r in rows], [r["label"] for r in rows])
    assert len(rows) == 2400 and acc == pytest.approx(recorded("wordnet-text"), abs=0.01)


def test_spoken_digits_are_recognised(demo_server):
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    inputs, labels = [], []
    for voice_speed in (150, 175):
        for w in words:
            inputs.append(base64.b64encode(spoken(w, 22050, "FLAC", speed=voice_speed)).decode())
            labels.append(w)
    assert accuracy(demo_server.url, "spoken-digits-audio", inputs, labels) >= 0.7


def test_wordnet_text_reads_its_tokenizer_as_before():
    """The bundled text model keeps its config (the short tokenizer field) and gets exactly the ids
    it was trained with: its sentencepiece pieces as they are, <s> 0 ... </s> 2, cut at its limit
    (so its embeddings are those it always gave)."""
    import sentencepiece as spm
    from texts import varied_texts

    from d2v.server.decode import make_input_decoder

    d = MODELS / "wordnet-text"
    config = json.loads((d / "config.json").read_text())
    assert config["preprocessing"]["tokenizer"] == "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    dec = make_input_decoder(config, d, 1, 1, 0)
    limit = config["preprocessing"]["max_tokens"]
    for text in (t for t in varied_texts() if t.strip()):
        assert dec(text, 0).data.tolist() == [0, *sp.encode(text)[: limit - 2], 2], repr(text[:50])


def test_spoken_commands_recognizer_scores_the_recorded_wer_over_http(demo_server, tmp_path):
    """The test split of `d2v data` (640 clips by 10 voices never heard in training), sent as FLAC
    files to /transcribe: the corpus WER and CER the shipped checkpoint's provenance records, within
    1 point (training's evaluation, the checkpoint, the server's decoding and trimming agree)."""
    root = build_spoken_commands(tmp_path / "commands", splits=("test",))  # the same clips as `d2v data`
    rows = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()]
    counts = ErrorCounts()
    with httpx.Client(base_url=demo_server.url, timeout=300) as client:
        for i in range(0, len(rows), 32):
            batch = rows[i:i + 32]
            r = client.post("/transcribe", json={"model": "spoken-commands-ctc", "inputs": [
                base64.b64encode((root / row["path"]).read_bytes()).decode() for row in batch]})
            assert r.status_code == 200, r.text
            for row, d in zip(batch, r.json()["data"], strict=True):
                counts.add(normalize_transcript(row["text"]), d["text"])
    metrics = json.loads((MODELS / "spoken-commands-ctc" / "config.json").read_text())["provenance"]["metrics"]
    assert counts.utterances == metrics["test_count"] == 640
    assert counts.wer == pytest.approx(metrics["test_wer"], abs=0.01)
    assert counts.cer == pytest.approx(metrics["test_cer"], abs=0.01)
