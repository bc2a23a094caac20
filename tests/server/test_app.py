"""The HTTP layer over a dummy engine through httpx's ASGI transport: statuses, auth, headers,
multipart, and /health turning 503 when the model fails."""

import asyncio
import threading

import httpx
import numpy as np
import pytest
from dummy import DummyBackend, DummyDecoder

from d2v.server.app import create_app
from d2v.server.backends.base import Task
from d2v.server.config import ServeConfig
from d2v.server.engine import Engine


def call(cfg_kw: dict, requests, backend_kw: dict | None = None, start: bool = True, decoder=None):
    """Run `requests(client, backend)` against an app with a dummy engine; returns its result."""
    backend = DummyBackend(labels=["a", "b", "c"], **(backend_kw or {}))
    cfg = ServeConfig(**{"max_wait_ms": 5, "decode_workers": 1, **cfg_kw})
    engine = Engine(cfg, [backend], decoders={"dummy": decoder or DummyDecoder()})
    app = create_app(cfg, engine)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            if not start:
                return await requests(client, backend)
            async with app.router.lifespan_context(app):
                return await requests(client, backend)

    return asyncio.run(main())


def test_embed_classify_and_headers():
    async def go(c, _):
        r = await c.post("/embed", json={"inputs": ["ab", "abc"], "normalize": False})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "dummy" and body["modality"] == "text" and body["usage"] == {"inputs": 2, "tokens": 9}
        assert [d["embedding"][1] for d in body["data"]] == [4, 5]
        for h in ("x-total-time", "x-queue-time", "x-decode-time", "x-inference-time"):
            assert float(r.headers[h]) >= 0
        r = await c.post("/classify", json={"inputs": "ab", "top_k": 2})
        assert r.status_code == 200 and len(r.json()["data"][0]["predictions"]) == 2
        r = await c.get("/models")
        assert r.json()["data"][0]["backend"] == "dummy"
        assert "x-total-time" in r.headers

    call({}, go)


def test_statuses():
    async def go(c, _):
        cases = [
            (c.post("/embed", json={"inputs": ["ab", "bad"]}), 400, "invalid_input"),
            (c.post("/embed", json={"model": "nope", "inputs": ["ab"]}), 404, "model_not_found"),
            (c.post("/embed", json={"inputs": ["ab"] * 5}), 413, "input_too_large"),
            (c.post("/embed", content=b"x" * 5000, headers={"content-type": "application/json"}), 413,
             "payload_too_large"),
            (c.post("/embed", content=b"ab", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"),
            (c.post("/embed", json={"inputs": ["ab"], "pooling": "max"}), 422, "invalid_request"),
            (c.post("/embed", json={"inputs": ["ab"], "colour": 1}), 422, "invalid_request"),
            (c.post("/embed", json={"inputs": []}), 422, "invalid_request"),
            (c.post("/embed", content=b"{not json", headers={"content-type": "application/json"}), 422,
             "invalid_request"),
            (c.get("/nowhere"), 404, "not_found"),
            (c.get("/embed"), 405, "method_not_allowed"),
        ]
        for coro, status, kind in cases:
            r = await coro
            assert r.status_code == status, (status, r.text)
            assert r.json()["error"]["type"] == kind, r.text
            assert r.json()["error"]["message"]
        r = await c.post("/embed", json={"inputs": ["ab", "bad"]})
        assert "input 1" in r.json()["error"]["message"]

    call({"max_inputs": 4, "max_payload_bytes": 4096}, go)



def test_typed_bodies_keep_their_statuses_and_messages():
    """The bodies FastAPI validates from the routes' typed parameters: what FastAPI's own body
    handling would answer differently (a streamed body over the limit: 400; malformed JSON: a
    'JSON decode error' naming no cause; a form on a JSON-only route: 422) keeps the documented
    status, and schema errors name the field."""
    async def go(c, _):
        async def chunks():
            for _ in range(5):
                yield b"x" * 1000

        r = await c.post("/embed", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large", r.text
        r = await c.post("/embed", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"], r.text
        r = await c.post("/embed", content=b"", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"], r.text
        r = await c.post("/embed", json={"model": "dummy"})
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("inputs: "), r.text
        r = await c.post("/classify", json={"inputs": "ab", "top_k": 0})
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("top_k: "), r.text
        r = await c.post("/embed", json=["ab"])
        assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_request", r.text
        r = await c.post("/v1/embeddings", data={"input": "ab"}, files=[("file", ("a.txt", b"ab", "text/plain"))])
        assert r.status_code == 415 and "application/json" in r.json()["error"]["message"], r.text
        r = await c.post("/embed", data={"model": "dummy"}, files=[("file", ("a.txt", b"ab", "text/plain"))])
        assert r.status_code == 200 and r.json()["usage"]["inputs"] == 1, r.text

    call({"max_inputs": 4, "max_payload_bytes": 4096}, go)


def test_the_document_is_generated_from_the_request_models():
    """The JSON request bodies are FastAPI's, from the routes' typed parameters; the multipart ones
    come from the same models."""
    from d2v.server.schemas import ClassifyRequest, EmbedRequest, OpenAIEmbeddingRequest, TranscribeRequest

    spec = create_app(ServeConfig()).openapi()
    for path, model in (("/embed", EmbedRequest), ("/classify", ClassifyRequest), ("/transcribe", TranscribeRequest),
                        ("/v1/embeddings", OpenAIEmbeddingRequest)):
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model.__name__}"}
        assert spec["components"]["schemas"][model.__name__]["required"] == model.model_json_schema()["required"]
        assert ("multipart/form-data" in body["content"]) == (path != "/v1/embeddings")

def test_api_key():
    async def go(c, _):
        assert (await c.post("/embed", json={"inputs": "ab"})).status_code == 401
        r = await c.post("/embed", json={"inputs": "ab"}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        assert (await c.get("/models")).status_code == 401
        ok = await c.post("/embed", json={"inputs": "ab"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        for path in ("/health", "/ready", "/metrics"):
            assert (await c.get(path)).status_code == 200, path

    call({"api_key": "s3cret"}, go)


def test_multipart_gives_the_same_response_as_json():
    async def go(c, _):
        j = await c.post("/embed", json={"inputs": ["hello"], "normalize": False})
        m = await c.post("/embed", files=[("file", ("a.txt", b"hello", "text/plain"))], data={"normalize": "false"})
        assert m.status_code == 200, m.text
        assert m.json()["data"] == j.json()["data"]
        base = await c.post("/embed", files=[("file", ("a.txt", b"hello", "text/plain"))],
                            data={"encoding_format": "base64"})
        assert isinstance(base.json()["data"][0]["embedding"], str)

    call({}, go)


def test_health_turns_503_when_the_model_fails():
    async def go(c, backend):
        assert (await c.get("/health")).status_code == 200
        backend.broken = True
        r = await c.get("/health")
        assert r.status_code == 503 and "out of memory" in r.json()["error"]["message"]
        backend.broken = False
        assert (await c.get("/health")).status_code == 200

    call({"health_cache_s": 0}, go)


def test_not_ready_before_warmup():
    async def go(c, _):
        assert (await c.get("/ready")).status_code == 503
        r = await c.post("/embed", json={"inputs": "ab"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "not_ready"

    call({}, go, start=False)


def test_overload_answers_429_with_retry_after():
    async def go(c, backend):
        backend.running.clear()
        backend.gate = threading.Event()
        first = asyncio.ensure_future(c.post("/embed", json={"inputs": ["ab"] * 3}))
        await asyncio.to_thread(backend.running.wait, 30)  # its batch runs, held at the gate
        r = await c.post("/embed", json={"inputs": ["ab"] * 3})
        backend.gate.set()
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert (await first).status_code == 200

    call({"max_queue": 4, "retry_after_s": 2}, go)


@pytest.mark.parametrize("route", ["/embed", "/classify"])
def test_openapi_documents_statuses(route):
    async def go(c, _):
        spec = (await c.get("/openapi.json")).json()
        codes = set(spec["paths"][route]["post"]["responses"])
        assert {"400", "401", "404", "413", "415", "422", "429", "503"} <= codes

    call({}, go)


def test_a_crashed_batcher_answers_503_and_health_says_so(monkeypatch):
    from d2v.server.engine import ModelWorker

    real = ModelWorker._batches
    crashes = []

    def broken_once(self, items):
        if not crashes:
            crashes.append(1)
            raise RuntimeError("bug in the batcher (simulated)")
        return real(self, items)

    async def go(c, _):
        monkeypatch.setattr(ModelWorker, "_batches", broken_once)
        r = await asyncio.wait_for(c.post("/embed", json={"inputs": ["ab"]}), 60)  # hang guard
        assert r.status_code == 503 and r.json()["error"]["type"] == "model_unavailable", r.text
        h = await c.get("/health")
        assert h.status_code == 503 and "crashed" in h.json()["error"]["message"]
        assert (await c.post("/embed", json={"inputs": ["ab"]})).status_code == 200
        assert (await c.get("/health")).status_code == 200

    call({"health_cache_s": 0}, go)


def test_health_polling_does_not_multiply_forward_passes():
    async def go(c, backend):
        before = len(backend.batches)
        rs = await asyncio.gather(*(c.get("/health") for _ in range(16)))
        assert all(r.status_code == 200 for r in rs)
        return len(backend.batches) - before

    assert call({"health_cache_s": 60}, go) == 1


class GatedDecoder(DummyDecoder):
    """Decoding of the input "slow" waits until the test opens the gate (it stands for a costly file)."""

    def __init__(self):
        self.entered, self.gate = threading.Event(), threading.Event()

    def __call__(self, value, index, truncate=True, content_type=None):
        if value == "slow":
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
            value = "ab"
        return super().__call__(value, index, truncate, content_type)


def test_inputs_waiting_for_decoding_count_toward_the_queue_limit():
    """A request whose inputs wait behind a slow decode is refused at once (429) when they would
    overfill the model's queue, instead of waiting in the decode pool."""
    decoder = GatedDecoder()

    async def go(c, _):
        first = asyncio.ensure_future(c.post("/embed", json={"inputs": ["slow", "ab", "ab"]}))
        assert await asyncio.to_thread(decoder.entered.wait, 60)
        try:
            # the hang guard only: before, this waited in the decode pool until the gate opened
            second = await asyncio.wait_for(c.post("/embed", json={"inputs": ["ab", "ab"]}), 20)
        finally:
            decoder.gate.set()
        assert second.status_code == 429 and second.json()["error"]["type"] == "overloaded", second.text
        assert (await first).status_code == 200
        third = await c.post("/embed", json={"inputs": ["ab"] * 4})  # the reservation was given back
        assert third.status_code == 200, third.text

    call({"max_queue": 4}, go, decoder=decoder)


def test_a_kernel_fallback_shows_in_models_and_metrics(model_dirs, monkeypatch):
    """The real PyTorch backend, warmed up through a wrong 'Triton' attention kernel (a stub standing in
    for the GPU one): the check at its first call catches it, the embeddings come from the reference,
    and /models and /metrics say so."""
    import types

    from d2v import kernels
    from d2v.kernels import reference
    from d2v.server.backends.base import load_backend

    wrong = types.SimpleNamespace(attention=lambda *a: reference.attention(*a) * 3.0)
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setattr(kernels, "MODE", "auto")
    monkeypatch.setattr(kernels, "_checks", {})
    monkeypatch.setattr(kernels, "_on_gpu", lambda t: True)
    monkeypatch.setattr(kernels, "_kernel_module", lambda name: wrong)
    backend = load_backend(model_dirs["text"], "text", "torch", "cpu", "bfloat16", 1)
    cfg = ServeConfig(max_wait_ms=1, decode_workers=1)
    app = create_app(cfg, Engine(cfg, [backend]))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c, \
                app.router.lifespan_context(app):
            info = (await c.get("/models")).json()["data"][0]
            metrics = (await c.get("/metrics")).text
            embedded = (await c.post("/embed", json={"inputs": ["a small cat"], "normalize": False})).json()
        return info, metrics, embedded

    info, metrics, embedded = asyncio.run(main())
    assert info["kernels"]["attention"].startswith("reference (fallback: the Triton attention kernel differs")
    assert info["path"] == model_dirs["text"].name
    assert 'd2v_kernel_fallback{model="text",op="attention"} 1.0' in metrics
    monkeypatch.setattr(kernels, "HAS_TRITON", False)  # the reference alone gives the same embedding
    alone = backend.run([backend_input(model_dirs["text"], "a small cat")], [Task("embed", backend.default_pooling)])
    np.testing.assert_allclose(embedded["data"][0]["embedding"], alone[0], rtol=1e-2, atol=1e-2)


def backend_input(directory, text):
    import json

    from d2v.server.decode import make_input_decoder

    config = json.loads((directory / "config.json").read_text())
    return make_input_decoder(config, directory, 1, 1, 0)(text, 0).data


def test_no_cors_by_default_and_explicit_allowed_hosts():
    async def go(c, _):
        r = await c.get("/ready", headers={"origin": "https://app.example", "host": "api.example.com"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        pre = await c.options("/embed", headers={"origin": "https://app.example", "host": "api.example.com",
                                                 "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in pre.headers
        for host, status in (("api.example.com", 200), ("API.example.com:443", 200), ("gpu1.internal", 200),
                             ("a.b.internal:8000", 200), ("localhost", 400), ("internal", 400),
                             ("api.example.com.evil.example", 400)):
            r = await c.get("/ready", headers={"host": host})
            assert r.status_code == status, (host, r.text)

    call({"allowed_hosts": "api.example.com, *.internal"}, go)
