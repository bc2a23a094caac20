"""Serving what `d2v convert` imports, over real HTTP from a real `d2v serve`: speech recognition
(`/transcribe`, OpenAI's `/v1/audio/transcriptions` through the real `openai` client) with the
converted fairseq CTC checkpoint and its ONNX export on real WAV and FLAC speech at several sample
rates, and `/classify` with the converted fairseq image classifier and HF sequence classifiers,
against the reference implementations' own outputs."""

import io
import json
import shutil
from math import gcd
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from harness import API_KEY, Server
from imported import AUDIO_LABELS, IMAGE_LABELS, TEXT_LABELS, fairseq_fixture
from media import audio_bytes, b64, digit, image_bytes
from realdata import speak
from scipy.signal import resample_poly

from d2v.ctc import CTCVocabulary, greedy_decode
from d2v.model.checkpoint import load_checkpoint
from d2v.model.encoders.audio import normalize_waveform
from d2v.preprocessing import trim_silence

PHRASES = ["turn left", "stop", "three one four", "go forward two steps", "nine"]
RATES = (8000, 16000, 22050, 44100, 48000)


@pytest.fixture(scope="module")
def trimming(imported, tmp_path_factory) -> Path:
    """The converted fairseq CTC checkpoint, with a config that trims silence (as d2v's own audio
    models trained on trimmed clips record it)."""
    trim = tmp_path_factory.mktemp("trim") / "ctc-trim"
    shutil.copytree(imported.checkpoint("fairseq-ctc"), trim)
    config = json.loads((trim / "config.json").read_text())
    config["preprocessing"]["trim_silence"] = {"threshold": 0.01, "margin_s": 0.05}
    (trim / "config.json").write_text(json.dumps(config))
    return trim


@pytest.fixture(scope="module")
def asr(imported, trimming) -> Server:
    """Speech recognizers (the fairseq CTC checkpoint with PyTorch and with onnxruntime, a copy that
    trims silence, the HF CTC model) and the imported classifiers, behind an API key."""
    trim = trimming
    models = {"ctc": imported.checkpoint("fairseq-ctc"), "ctc-onnx": imported.export("fairseq-ctc"), "ctc-trim": trim,
              "hf-ctc": imported.checkpoint("hf-ctc"), "in1k": imported.checkpoint("fairseq-image-classifier"),
              "in1k-onnx": imported.export("fairseq-image-classifier"),
              "hf-text": imported.checkpoint("hf-text-classifier"),
              "hf-audio": imported.checkpoint("hf-audio-classifier"), "audio": imported.checkpoint("fairseq-audio")}
    args = [a for name, path in models.items() for a in ("--model", f"{name}={path}")]
    s = Server([*args, "--api-key", API_KEY, "--max-audio-seconds", "5", "--max-inputs", "8", "--max-wait-ms", "20"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(asr) -> httpx.Client:
    with httpx.Client(base_url=asr.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    """Real espeak-ng speech, "PHRASE @RATE.wav" and ".flac" (16-bit) at every rate of RATES, of
    different lengths and speeds."""
    out = {}
    for i, phrase in enumerate(PHRASES):
        for rate in RATES:
            wav = speak(phrase, speed=130 + 15 * i, rate=rate)
            for fmt in ("WAV", "FLAC"):
                out[f"{phrase} @{rate}.{fmt.lower()}"] = audio_bytes(wav, rate, fmt)
    return out


def reference(checkpoint, files: list[bytes]) -> list[str]:
    """Each file alone: read (soundfile), made mono, resampled to the model's rate (scipy's
    polyphase filter), trimmed if the model trims, through the PyTorch model; its emissions decoded
    directly with d2v.ctc."""
    model, config = load_checkpoint(checkpoint)
    vocab = CTCVocabulary.from_head(config.head.to_dict())
    rate, trim = config.encoder.audio.sample_rate, config.preprocessing.get("trim_silence")
    texts = []
    for raw in files:
        wav, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        wav = wav.mean(axis=1, dtype=np.float32)
        if sr != rate:
            g = gcd(sr, rate)
            wav = resample_poly(wav, rate // g, sr // g).astype(np.float32)
        if trim:
            wav = trim_silence(wav, rate, **trim)
        with torch.no_grad():
            emissions = model.forward_head(*model.forward_features(torch.from_numpy(wav)[None]))
        texts.append(greedy_decode(emissions.numpy(), vocab)[0])
    return texts


def transcribe(client, model: str, files: list[bytes], **kw) -> list[str]:
    r = client.post("/transcribe", json={"model": model, "inputs": [b64(f) for f in files], **kw})
    assert r.status_code == 200, r.text
    return [d["text"] for d in r.json()["data"]]


def test_fairseq_transcripts_over_http(client):
    """The fixture's waveforms as float WAV files: the served checkpoint and its ONNX export write
    exactly the transcripts fairseq wrote, in one batched request and each alone."""
    _, inputs, expected = fairseq_fixture("fairseq-ctc")
    files = [audio_bytes(w[:n], 16000, "WAV", subtype="FLOAT") for w, n in zip(inputs["waveforms"], inputs["lengths"],
                                                                           strict=True)]
    for model in ("ctc", "ctc-onnx"):
        assert transcribe(client, model, files) == expected["transcripts"].tolist()
        assert [transcribe(client, model, [f])[0] for f in files] == expected["transcripts"].tolist()


def test_real_speech_at_several_rates_equals_decoding_the_emissions_directly(client, clips, imported):
    names = list(clips)
    expected = reference(imported.checkpoint("fairseq-ctc"), [clips[n] for n in names])
    assert sum(bool(t) for t in expected) > len(names) // 2  # random weights, but they do write letters
    got = []
    for i in range(0, len(names), 8):  # --max-inputs 8
        got += transcribe(client, "ctc", [clips[n] for n in names[i:i + 8]])
    assert dict(zip(names, got, strict=True)) == dict(zip(names, expected, strict=True))
    assert [t for t in got if t] and all(t == " ".join(t.split()) for t in got)  # words, single spaces


def test_batching_never_changes_a_transcript(client, clips, imported):
    """A request of clips of different lengths, many concurrent requests, and multipart uploads all
    give each clip the transcript it gets alone."""
    import concurrent.futures

    names = [n for n in clips if n.endswith(("@16000.wav", "@16000.flac", "@44100.wav", "@44100.flac"))]
    alone = {n: transcribe(client, "ctc", [clips[n]])[0] for n in names}
    assert alone == dict(zip(names, reference(imported.checkpoint("fairseq-ctc"), [clips[n] for n in names]),
                             strict=True))
    assert transcribe(client, "ctc", [clips[n] for n in names[:8]]) == [alone[n] for n in names[:8]]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda n: transcribe(client, "ctc", [clips[n]])[0], names * 2))
    assert together == [alone[n] for n in names * 2]
    r = client.post("/transcribe", data={"model": "ctc"}, files=[("file", (n, clips[n], "audio/wav")) for n in names[:3]])
    assert r.status_code == 200, r.text
    assert [d["text"] for d in r.json()["data"]] == [alone[n] for n in names[:3]]
    metrics = client.get("/metrics").text
    assert 'd2v_requests_total{route="/transcribe",status="200"}' in metrics
    assert 'd2v_batch_size_count{model="ctc"}' in metrics


def test_the_onnx_backend_and_the_hf_model_transcribe(client, clips, imported):
    names = list(clips)[:8]
    files = [clips[n] for n in names]
    assert transcribe(client, "ctc-onnx", files) == transcribe(client, "ctc", files)
    assert transcribe(client, "hf-ctc", files) == reference(imported.checkpoint("hf-ctc"), files)


def test_response_shape_usage_and_timing(client, clips):
    clip = clips["stop @22050.wav"]
    r = client.post("/transcribe", json={"inputs": b64(clip, "audio/wav")})  # no model: the first recognizer
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "ctc" and body["data"][0]["index"] == 0
    assert body["usage"]["inputs"] == 1
    assert body["usage"]["seconds"] == pytest.approx(sf.info(io.BytesIO(clip)).duration, abs=1e-4)
    for h in ("x-decode-time", "x-queue-time", "x-inference-time", "x-total-time"):
        assert float(r.headers[h]) >= 0


def test_silence_is_trimmed_as_the_model_asks(client, trimming):
    """A model whose config trims silence hears the same speech with 0.1 s or 2.5 s of silence around
    it (and resampled from 44.1 kHz), as the reference that trims gets it."""
    wav = speak("go forward two steps", rate=16000)

    def around(before: float, after: float) -> bytes:
        x = np.concatenate([np.zeros(int(before * 16000), np.float32), wav, np.zeros(int(after * 16000), np.float32)])
        return audio_bytes(x, 16000, "WAV", subtype="FLOAT")

    short, long = around(0.1, 0.1), around(1.0, 1.5)
    expected = transcribe(client, "ctc-trim", [short])
    assert expected == transcribe(client, "ctc-trim", [long]) == reference(trimming, [long])
    r = client.post("/transcribe", json={"model": "ctc-trim", "inputs": [b64(long)]})
    assert r.json()["usage"]["seconds"] == pytest.approx(len(wav) / 16000 + 2.5, abs=1e-3)  # as sent, not as heard


def test_errors(client, clips):
    good = b64(clips["stop @16000.wav"])
    long = b64(audio_bytes(0.1 * np.sin(np.arange(16000 * 6, dtype=np.float32) / 7), 16000))
    cases = [
        ({"model": "in1k", "inputs": [good]}, 422, "invalid_request", "'in1k' is not a speech recognizer"),
        ({"model": "audio", "inputs": [good]}, 422, "invalid_request", "speech recognizers loaded: ctc, ctc-onnx"),
        ({"model": "ctc", "inputs": [b64(b"RIFF\x00\x00\x00\x00WAVEjunk")]}, 400, "invalid_input", "input 0"),
        ({"model": "ctc", "inputs": [good, "%%%"]}, 400, "invalid_input", "input 1"),
        ({"model": "ctc", "inputs": [long]}, 413, "input_too_large", "exceeds the limit of 5 s"),
        ({"model": "ctc", "inputs": [good] * 9}, 413, "input_too_large", "9 inputs"),
        ({"model": "ctc", "inputs": [b64(image_bytes(digit(1)), "image/png")]}, 415, "unsupported_media_type", ""),
        ({"model": "whisper-1", "inputs": [good]}, 404, "model_not_found", "loaded: ctc"),
        ({"model": "ctc", "inputs": []}, 422, "invalid_request", "no inputs"),
        ({"model": "ctc", "inputs": [good], "top_k": 3}, 422, "invalid_request", "top_k"),
        ({"model": "ctc", "inputs": [[0, 5, 2]]}, 422, "invalid_request", ""),
    ]
    for body, status, kind, needle in cases:
        r = client.post("/transcribe", json=body)
        assert (r.status_code, r.json()["error"]["type"]) == (status, kind), (body.get("model"), r.text)
        assert needle in r.json()["error"]["message"], r.text
    r = client.post("/classify", json={"model": "ctc", "inputs": [good]})
    assert r.status_code == 422 and "is a speech recognizer" in r.text and "/transcribe" in r.text
    r = client.post("/embed", json={"model": "ctc", "inputs": [good], "pooling": "cls"})
    assert r.status_code == 422 and "no CLS token" in r.text


def test_a_speech_recognizer_embeds(client, clips):
    """/embed of a CTC model: the encoder's frames, mean-pooled (as for any audio model)."""
    r = client.post("/embed", json={"model": "ctc", "inputs": [b64(clips["stop @16000.wav"])]})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 48


def test_models_say_what_each_model_answers(client):
    models = {m["name"]: m for m in client.get("/models").json()["data"]}
    assert models["ctc"]["tasks"] == ["embed", "transcribe"] and models["ctc"]["labels"] is None
    assert models["ctc-onnx"]["tasks"] == ["embed", "transcribe"] and models["ctc-onnx"]["backend"] == "onnx"
    assert models["in1k"]["tasks"] == ["embed", "classify"] and models["in1k"]["labels"] == IMAGE_LABELS
    assert models["audio"]["tasks"] == ["embed"]


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x.astype(np.float64) - x.max())
    return z / z.sum()


def scores(client, model: str, inputs: list, labels: list[str]) -> np.ndarray:
    """(N, C) softmax scores of every label, in label order, from /classify."""
    r = client.post("/classify", json={"model": model, "inputs": inputs, "top_k": len(labels)})
    assert r.status_code == 200, r.text
    out = np.zeros((len(inputs), len(labels)))
    for d in r.json()["data"]:
        for p in d["predictions"]:
            out[d["index"], labels.index(p["label"])] = p["score"]
    return out


@pytest.mark.parametrize("model", ["in1k", "in1k-onnx"])
def test_the_fairseq_image_classifier_scores_fairseqs_logits(client, model):
    """The fixture's images as PNG files: the scores are the softmax of the logits fairseq computed,
    under the labels given to `d2v convert --labels`."""
    _, inputs, expected = fairseq_fixture("fairseq-image-classifier")
    from PIL import Image

    files = [b64(image_bytes(Image.fromarray(x)), "image/png") for x in inputs["images_uint8"]]
    got = scores(client, model, files, IMAGE_LABELS)
    np.testing.assert_allclose(got, np.stack([softmax(x) for x in expected["logits"]]), atol=1e-4)
    r = client.post("/classify", data={"model": model, "top_k": "1"},
                    files=[("file", ("x.png", image_bytes(Image.fromarray(inputs["images_uint8"][0])), "image/png"))])
    assert r.json()["data"][0]["predictions"][0]["label"] == IMAGE_LABELS[int(expected["logits"][0].argmax())]


def test_hf_sequence_classifiers_score_transformers_logits(client, imported, clips):
    text_hf, audio_hf = imported.hf_models["hf-text-classifier"], imported.hf_models["hf-audio-classifier"]
    ids = [[0, 17, 43, 9, 2], [0, 5, 88, 61, 30, 71, 12, 2], [0, 40, 2]]
    with torch.no_grad():
        ref = [text_hf(input_ids=torch.tensor([x])).logits[0].numpy() for x in ids]
    np.testing.assert_allclose(scores(client, "hf-text", ids, list(TEXT_LABELS.values())),
                               np.stack([softmax(x) for x in ref]), atol=1e-5)
    files = [clips[w] for w in ("stop @16000.wav", "nine @16000.flac", "turn left @16000.flac")]
    ref = []
    for raw in files:
        wav, _ = sf.read(io.BytesIO(raw), dtype="float32")
        x = torch.from_numpy(wav)[None]
        with torch.no_grad():  # HF normalizes outside the model (its feature extractor); d2v inside
            ref.append(audio_hf(normalize_waveform(x, torch.zeros_like(x, dtype=torch.bool))).logits[0].numpy())
    np.testing.assert_allclose(scores(client, "hf-audio", [b64(f) for f in files], list(AUDIO_LABELS.values())),
                               np.stack([softmax(x) for x in ref]), atol=1e-5)


def test_the_openai_client_transcribes_and_lists_models(asr, client, clips):
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=asr.url + "/v1", api_key=API_KEY, max_retries=0)
    name = "turn left @44100.flac"
    expected = transcribe(client, "ctc", [clips[name]])[0]
    result = api.audio.transcriptions.create(model="ctc", file=("clip.flac", clips[name], "audio/flac"))
    assert result.text == expected
    text = api.audio.transcriptions.create(model="ctc-onnx", file=("clip.flac", clips[name]), response_format="text",
                                           language="en", temperature=0.0)
    assert text == expected
    with pytest.raises(openai.NotFoundError, match="unknown model 'whisper-1'"):
        api.audio.transcriptions.create(model="whisper-1", file=("clip.flac", clips[name]))
    with pytest.raises(openai.UnprocessableEntityError, match="not a speech recognizer"):
        api.audio.transcriptions.create(model="in1k", file=("clip.flac", clips[name]))
    with pytest.raises(openai.BadRequestError, match="not a readable audio file"):
        api.audio.transcriptions.create(model="ctc", file=("clip.wav", b"RIFF\x00\x00\x00\x00WAVEjunk"))
    models = api.models.list()
    loaded = [m["name"] for m in client.get("/models").json()["data"]]
    assert [m.id for m in models.data] == loaded
    assert all(m.object == "model" and m.owned_by == "d2v" and m.created > 0 for m in models.data)
    assert api.models.retrieve("ctc").id == "ctc"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("gpt-4")


def test_openai_transcriptions_take_one_multipart_file(client, clips):
    clip = clips["nine @8000.wav"]
    r = client.post("/v1/audio/transcriptions", data={"model": "ctc"}, files=[("file", ("a.wav", clip, "audio/wav"))])
    assert r.status_code == 200 and r.json() == {"text": transcribe(client, "ctc", [clip])[0]}
    r = client.post("/v1/audio/transcriptions", data={"model": "ctc", "response_format": "text"},
                    files=[("file", ("a.wav", clip, "audio/wav"))])
    assert r.headers["content-type"].startswith("text/plain") and r.text == transcribe(client, "ctc", [clip])[0]
    assert float(r.headers["x-inference-time"]) >= 0
    two = client.post("/v1/audio/transcriptions", data={"model": "ctc"},
                      files=[("file", ("a.wav", clip, "audio/wav")), ("file", ("b.wav", clip, "audio/wav"))])
    assert two.status_code == 422 and "one audio file" in two.text
    none = client.post("/v1/audio/transcriptions", data={"model": "ctc"}, files=[("other", ("a", b"", "text/plain"))])
    assert none.status_code == 422
    srt = client.post("/v1/audio/transcriptions", data={"model": "ctc", "response_format": "srt"},
                      files=[("file", ("a.wav", clip, "audio/wav"))])
    assert srt.status_code == 422 and "response_format" in srt.text
    js = client.post("/v1/audio/transcriptions", json={"model": "ctc", "file": b64(clip)})
    assert js.status_code == 415
    assert client.get("/v1/models/nope").status_code == 404
