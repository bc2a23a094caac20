"""The whole HTTP API against a real `d2v serve` process (uvicorn on a free loopback port) serving
tiny models of every modality with both backends: every route, the error statuses, real files,
64 concurrent requests mixing good and bad inputs, a full queue, graceful drain, backend parity."""

import asyncio
import base64
import random
import re
import signal
import threading
import time

import httpx
import numpy as np
import pytest
from harness import API_KEY, CORS_ORIGIN, Server
from media import audio_bytes, b64, digit, image_bytes, photo, spoken

MODALITIES = ("image", "audio", "text")
GLOSSES = ["a domesticated carnivorous mammal", "the act of moving from one place to another",
           "a building where people live", "a small piece of paper", "any of various tools"]


def image_inputs() -> list[str]:
    return [b64(image_bytes(photo(0), "JPEG"), "image/jpeg"), b64(image_bytes(digit(7), "PNG")),
            b64(image_bytes(photo(1).convert("RGBA"), "PNG"), "image/png"), b64(image_bytes(digit(2), "GIF"))]


def audio_inputs() -> list[str]:
    return [b64(spoken("seven", 16000), "audio/wav"), b64(spoken("three", 8000, "FLAC"), "audio/flac"),
            b64(spoken("zero", 44100, "OGG"), "audio/ogg"), b64(spoken("one", 22050, channels=2))]


@pytest.fixture(scope="module")
def inputs() -> dict[str, list[str]]:
    return {"image": image_inputs(), "audio": audio_inputs(), "text": GLOSSES}


def embed(client, model, inputs, **kw) -> np.ndarray:
    r = client.post("/embed", json={"model": model, "inputs": inputs, **kw})
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float64)


def test_routes(client, server):
    models = {m["name"]: m for m in client.get("/models").json()["data"]}
    assert set(models) == {"image", "image-onnx", "audio", "audio-onnx", "text", "text-onnx", "text-slow", "ctc"}
    assert models["image"]["backend"] == "torch" and models["image-onnx"]["backend"] == "onnx"
    assert models["text"]["dimensions"] == 32 and models["audio"]["labels"][0] == "zero"
    with httpx.Client(base_url=server.url) as open_client:  # no API key
        assert open_client.get("/health").json()["status"] == "ok"
        assert open_client.get("/ready").status_code == 200
        metrics = open_client.get("/metrics")
        assert metrics.status_code == 200 and "d2v_inference_seconds" in metrics.text
        assert open_client.get("/openapi.json").status_code == 200 and open_client.get("/docs").status_code == 200
        assert open_client.get("/models").status_code == 401
    r = client.get("/models")
    assert "x-total-time" in r.headers


@pytest.mark.parametrize("modality", MODALITIES)
def test_embed_and_classify_real_files(client, inputs, modality):
    x = embed(client, modality, inputs[modality])
    assert x.shape == (len(inputs[modality]), 32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    r = client.post("/classify", json={"modality": modality, "inputs": inputs[modality], "top_k": 3})
    assert r.status_code == 200, r.text
    for d in r.json()["data"]:
        scores = [p["score"] for p in d["predictions"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    for h in ("x-decode-time", "x-queue-time", "x-inference-time", "x-total-time"):
        assert float(r.headers[h]) >= 0


@pytest.mark.parametrize("modality", MODALITIES)
def test_the_two_backends_agree(client, inputs, modality):
    tol = 1e-4  # the export's parity tolerance
    a = embed(client, modality, inputs[modality], normalize=False)
    b = embed(client, f"{modality}-onnx", inputs[modality], normalize=False)
    np.testing.assert_allclose(a, b, atol=tol)
    if modality != "audio":
        np.testing.assert_allclose(embed(client, modality, inputs[modality], pooling="cls"),
                                   embed(client, f"{modality}-onnx", inputs[modality], pooling="cls"), atol=tol)
    sa = client.post("/classify", json={"model": modality, "inputs": inputs[modality], "top_k": 10}).json()
    sb = client.post("/classify", json={"model": f"{modality}-onnx", "inputs": inputs[modality], "top_k": 10}).json()
    for da, db in zip(sa["data"], sb["data"], strict=True):
        pa = {p["label"]: p["score"] for p in da["predictions"]}
        pb = {p["label"]: p["score"] for p in db["predictions"]}
        assert pa.keys() == pb.keys() and all(abs(pa[k] - pb[k]) < tol for k in pa)


def test_options(client, inputs):
    full = embed(client, "text", GLOSSES[:2], normalize=False)
    cut = embed(client, "text", GLOSSES[:2], dimensions=8)
    np.testing.assert_allclose(cut, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-6)
    r = client.post("/embed", json={"model": "text", "inputs": GLOSSES[:2], "encoding_format": "base64"})
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in r.json()["data"]]
    # JSON floats are float32 written exactly (orjson's shortest repr): they read back bit for bit
    np.testing.assert_array_equal(np.stack(decoded), embed(client, "text", GLOSSES[:2]).astype(np.float32))
    assert not np.allclose(embed(client, "text", GLOSSES[:1], pooling="cls"),
                           embed(client, "text", GLOSSES[:1], pooling="mean"))
    single = client.post("/embed", json={"modality": "text", "inputs": GLOSSES[0]}).json()
    assert single["model"] == "text" and single["usage"]["inputs"] == 1 and single["usage"]["tokens"] > 2


def test_multipart_uploads_match_json(client):
    photo_bytes, wav = image_bytes(photo(0), "JPEG"), spoken("seven", 22050)
    for model, data, mime in (("image", photo_bytes, "image/jpeg"), ("audio", wav, "audio/wav")):
        m = client.post("/embed", data={"model": model}, files=[("file", ("f", data, mime)), ("file", ("g", data, mime))])
        assert m.status_code == 200, m.text
        j = embed(client, model, [b64(data)])
        np.testing.assert_allclose(np.array([d["embedding"] for d in m.json()["data"]]), np.vstack([j, j]), atol=1e-6)
    r = client.post("/classify", data={"model": "image", "top_k": "2"}, files=[("file", ("f", photo_bytes, "image/jpeg"))])
    assert r.status_code == 200 and len(r.json()["data"][0]["predictions"]) == 2
    bad = client.post("/embed", data={"model": "image"}, files=[("file", ("f", wav, "audio/wav"))])
    assert bad.status_code == 415


def test_openai_route(client, inputs):
    r = client.post("/v1/embeddings", json={"input": GLOSSES[:2], "model": "text", "user": "u1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "text" and body["data"][1]["index"] == 1
    assert body["data"][0]["object"] == "embedding" and body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], embed(client, "text", GLOSSES[:2]), atol=1e-6)
    r = client.post("/v1/embeddings", json={"input": GLOSSES[0], "dimensions": 4, "encoding_format": "base64"})
    assert r.status_code == 200 and len(base64.b64decode(r.json()["data"][0]["embedding"])) == 16
    r = client.post("/v1/embeddings", json={"input": inputs["image"][:1], "modality": "image"})
    assert r.status_code == 200 and r.json()["model"] == "image"


def test_error_statuses(client, server):
    long_audio = b64(audio_bytes(np.zeros(16000 * 6, np.float32), 16000))
    huge_image = b64(image_bytes(blank_image(2000, 1000)))
    cases = [
        ({"model": "image", "inputs": [b64(b"not an image")]}, 400, "invalid_input"),
        ({"model": "audio", "inputs": ["%%%"]}, 400, "invalid_input"),
        ({"model": "nope", "inputs": ["x"]}, 404, "model_not_found"),
        ({"model": "text", "inputs": ["x"] * 17}, 413, "input_too_large"),
        ({"model": "text", "inputs": [" ".join(GLOSSES * 10)], "truncate": False}, 413, "input_too_large"),
        ({"model": "audio", "inputs": [long_audio]}, 413, "input_too_large"),
        ({"model": "image", "inputs": [huge_image]}, 413, "input_too_large"),
        ({"model": "image", "inputs": [b64(spoken("one"), "audio/wav")]}, 415, "unsupported_media_type"),
        ({"model": "text", "inputs": ["x"], "dimensions": 33}, 422, "invalid_request"),
        ({"model": "audio", "inputs": audio_inputs()[:1], "pooling": "cls"}, 422, "invalid_request"),
        ({"inputs": ["x"]}, 422, "invalid_request"),  # several models: name one
        ({"model": "text", "inputs": ["x"], "normalize": "maybe"}, 422, "invalid_request"),
    ]
    for body, status, kind in cases:
        r = client.post("/embed", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["type"] == kind
    assert "input 0" in client.post("/embed", json=cases[0][0]).json()["error"]["message"]
    r = client.post("/embed", content=b"x" * (2 * 1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    r = client.post("/embed", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    with httpx.Client(base_url=server.url) as anon:
        r = anon.post("/embed", json={"model": "text", "inputs": ["x"]})
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
    assert client.get("/nowhere").status_code == 404


def blank_image(w: int, h: int):
    from PIL import Image

    return Image.new("RGB", (w, h))


def test_full_queue_gives_429(client, server):
    # text-slow: a queue of 4 inputs and a 2 s batching wait. Once the first request's 3 inputs are
    # admitted (the queue-length gauge says so), the second's 2 do not fit: it gets 429 while the
    # first is still waiting for its batch, which then gets 200
    first: dict = {}
    t = threading.Thread(target=lambda: first.update(
        r=client.post("/embed", json={"model": "text-slow", "inputs": GLOSSES[:3]})))
    t.start()
    while _metric(client.get("/metrics").text, "d2v_queue_length", "text-slow") < 3:
        assert t.is_alive(), first
        time.sleep(0.02)
    second = client.post("/embed", json={"model": "text-slow", "inputs": GLOSSES[:2]})
    answered_first = not t.is_alive()
    t.join(30)
    assert second.status_code == 429 and first["r"].status_code == 200, (second.text, first["r"].text)
    assert not answered_first  # refused at once, not after the batching wait
    assert second.headers["retry-after"] == "1" and second.json()["error"]["type"] == "overloaded"


def _metric(text: str, name: str, model: str) -> float:
    m = re.search(rf'^{name}\{{model="{model}"\}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_64_concurrent_requests_mixing_good_and_bad(client, server, inputs):
    good = []
    for modality in MODALITIES:
        for suffix in ("", "-onnx"):
            for i, x in enumerate(inputs[modality]):
                route = "/classify" if i % 2 else "/embed"
                good.append((route, {"model": modality + suffix, "inputs": [x]}))
    good.append(("/embed", {"model": "text", "inputs": GLOSSES}))
    good.append(("/embed", {"model": "audio-onnx", "inputs": inputs["audio"][::-1]}))
    bad = [
        ("/embed", {"model": "image", "inputs": [inputs["image"][0], b64(b"garbage")]}, 400),
        ("/embed", {"model": "audio", "inputs": ["!!!"]}, 400),
        ("/embed", {"model": "audio-onnx", "inputs": [b64(image_bytes(digit(1)), "image/png")]}, 415),
        ("/classify", {"model": "text", "inputs": [""]}, 400),
        ("/embed", {"model": "text", "inputs": ["x"] * 20}, 413),
        ("/embed", {"model": "ghost", "inputs": ["x"]}, 404),
        ("/embed", {"model": "text-onnx", "inputs": ["x"], "pooling": "median"}, 422),
    ]
    requests = ([(r, b, 200) for r, b in good] * 2)[:50] + bad * 2
    random.Random(0).shuffle(requests)
    assert len(requests) == 64 and sum(s != 200 for *_, s in requests) == 14

    def key(route: str, body: dict) -> str:
        return repr((route, body))

    alone = {}
    for route, body, status in requests:
        if status == 200 and key(route, body) not in alone:
            alone[key(route, body)] = client.post(route, json=body).json()["data"]

    before = client.get("/metrics").text

    async def fire():
        headers = {"Authorization": f"Bearer {API_KEY}"}
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120, limits=limits) as c:
            return await asyncio.gather(*(c.post(route, json=body) for route, body, _ in requests))

    responses = asyncio.run(fire())
    for (route, body, status), r in zip(requests, responses, strict=True):
        assert r.status_code == status, (route, body.get("model"), r.text[:200])
        if status != 200:
            assert r.json()["error"]["message"]
            continue
        for got, ref in zip(r.json()["data"], alone[key(route, body)], strict=True):
            if route == "/embed":
                np.testing.assert_allclose(got["embedding"], ref["embedding"], atol=1e-5)
            else:
                assert [p["label"] for p in got["predictions"]] == [p["label"] for p in ref["predictions"]]
                np.testing.assert_allclose([p["score"] for p in got["predictions"]],
                                           [p["score"] for p in ref["predictions"]], atol=1e-5)
    after = client.get("/metrics").text
    batched = []
    for model in ("image", "audio", "text", "image-onnx", "audio-onnx", "text-onnx"):
        n_batches = _metric(after, "d2v_batch_size_count", model) - _metric(before, "d2v_batch_size_count", model)
        n_inputs = _metric(after, "d2v_batch_size_sum", model) - _metric(before, "d2v_batch_size_sum", model)
        batched.append(n_inputs > n_batches)
    assert any(batched), "no batch held more than one input"
    assert 'd2v_requests_total{route="/embed",status="400"}' in after
    assert "d2v_queue_length" in after and "d2v_batch_fill_bucket" in after and "d2v_decode_seconds" in after


def test_sigterm_drains_in_flight_requests(model_dirs):
    s = Server(["--model", f"text={model_dirs['text']},max_wait_ms=2000", "--drain-seconds", "20"])
    results: list = []

    def send(i: int) -> None:
        try:
            r = httpx.post(s.url + "/embed", json={"inputs": GLOSSES[i % 5]}, timeout=30)
            results.append(r.status_code)
        except httpx.HTTPError as e:
            results.append(repr(e))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    # SIGTERM once all six are admitted, while they wait for their batch (a 2 s batching wait)
    while _metric(httpx.get(s.url + "/metrics").text, "d2v_queue_length", "text") < 6:
        assert any(t.is_alive() for t in threads), results
        time.sleep(0.02)
    rc = s.stop(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert results == [200] * 6, s.output()
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, so the exit reads as the signal
    assert rc in (0, -signal.SIGTERM), s.output()
    assert "Traceback" not in s.output()


def raw_request(port: int, request: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply and (chunk := s.recv(65536)):
            reply += chunk
    return reply


def test_only_the_servers_own_host_names_are_accepted(server):
    """Bound to 127.0.0.1 with no --allowed-hosts: a page on another domain re-pointed at 127.0.0.1 (DNS
    rebinding) sends its own name as Host, and is refused."""
    port = server.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}", "localhost.evil.example"):
        r = httpx.get(server.url + "/health", headers={"host": host})
        assert r.status_code == 400, host
        assert r.json()["error"]["type"] == "invalid_host" and host in r.json()["error"]["message"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LocalHost", f"[::1]:{port}", "127.0.0.1"):
        assert httpx.get(server.url + "/health", headers={"host": host}).status_code == 200, host
    no_host = raw_request(port, b"GET /ready HTTP/1.0\r\n\r\n")
    assert no_host.startswith(b"HTTP/1.1 400 "), no_host[:100]


def test_cors_lets_only_the_configured_origin_read(client):
    pre = client.options("/embed", headers={"origin": CORS_ORIGIN, "access-control-request-method": "POST",
                                            "access-control-request-headers": "authorization, content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    r = client.post("/embed", json={"model": "text", "inputs": ["x"]}, headers={"origin": CORS_ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == CORS_ORIGIN
    other = client.post("/embed", json={"model": "text", "inputs": ["x"]}, headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    bad = client.options("/embed", headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in bad.headers


def test_messages_and_models_show_no_server_paths_or_object_reprs(client, model_dirs, imported):
    names = {d.name for d in model_dirs.values()} | {imported.checkpoint("fairseq-ctc").name}
    for m in client.get("/models").json()["data"]:
        assert "/" not in m["path"] and m["path"] in names
        assert m["kernels"] == ({"attention": "reference", "conv_block": "reference"} if m["backend"] == "torch"
                                else None)
    for model, junk in (("image", b"not an image at all"), ("audio", b"RIFF....WAVEfmt garbage"),
                        ("image-onnx", b"GIF89a broken")):
        r = client.post("/embed", json={"model": model, "inputs": [b64(junk)]})
        message = r.json()["error"]["message"]
        assert r.status_code == 400 and "object at 0x" not in message and "BytesIO" not in message, message
        assert str(model_dirs["image"].parent) not in message
