"""The CPU cost of the HTTP layer alone, per request: middleware, body reading and validation, the
route, and rendering the answer, for /embed and /v1/embeddings with 64 texts (answered with 64 x 768
float32 embeddings) and with one, against a stub engine that does no work, the ASGI app called
directly (no sockets). Then one 64 x 768 answer rendered the route's way (orjson of numpy arrays)
and the way FastAPI renders a returned pydantic model (build, validate against response_model,
dump, render).

    python bench/http_layer.py
    python bench/http_layer.py --rounds 9 --requests 200

Process CPU time, the best of --rounds rounds: on a shared machine wall time mostly measures the
neighbours.
"""

import argparse
import asyncio
import contextlib
import time
import timeit
from types import SimpleNamespace

import numpy as np
import orjson

from d2v.server.app import create_app
from d2v.server.config import ServeConfig
from d2v.server.schemas import EmbedResponse

DIM = 768
EMBEDDINGS = np.random.default_rng(0).standard_normal((64, DIM)).astype(np.float32)
WORKER = SimpleNamespace(name="stub", modality="text", backend=SimpleNamespace(labels=None))


class StubEngine:
    """What the embedding routes ask of an engine, answered at once."""

    ready, metrics, workers = True, None, {"stub": WORKER}

    def resolve(self, model, modality):
        return WORKER

    def check_embed(self, *args) -> None:
        pass

    def admit(self, *args):
        return contextlib.nullcontext()

    async def decode(self, worker, values, truncate, types):
        return [SimpleNamespace(tokens=3)] * len(values), 0.0

    async def embed(self, worker, decoded, pooling, dimensions, admitted):
        return SimpleNamespace(values=EMBEDDINGS[:len(decoded)], queue_s=0.0, inference_s=0.0)


async def post(app, path: str, body: bytes) -> None:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    statuses = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    headers = [(b"host", b"localhost"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
               "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http", "headers": headers,
               "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}, receive, send)
    assert statuses == [200], statuses


async def layer(rounds: int, requests: int) -> None:
    app = create_app(ServeConfig(max_inputs=64), StubEngine())
    texts = [f"text number {i}" for i in range(64)]
    for n in (64, 1):
        for path, field in (("/embed", "inputs"), ("/v1/embeddings", "input")):
            body = orjson.dumps({field: texts[:n]})
            for _ in range(20):
                await post(app, path, body)
            best = float("inf")
            for _ in range(rounds):
                start = time.process_time()
                for _ in range(requests):
                    await post(app, path, body)
                best = min(best, (time.process_time() - start) / requests)
            print(f"{path} with {n} input(s): {best * 1e3:.2f} ms CPU per request")


def orjson_numpy() -> bytes:
    data = [{"index": i, "embedding": np.ascontiguousarray(v)} for i, v in enumerate(EMBEDDINGS)]
    return orjson.dumps({"object": "list", "model": "stub", "modality": "text", "data": data,
                         "usage": {"inputs": 64, "tokens": 640}}, option=orjson.OPT_SERIALIZE_NUMPY)


def pydantic_model() -> bytes:
    m = EmbedResponse(model="stub", modality="text", usage={"inputs": 64, "tokens": 640},
                      data=[{"index": i, "embedding": v.tolist()} for i, v in enumerate(EMBEDDINGS)])
    return orjson.dumps(EmbedResponse.model_validate(m.model_dump()).model_dump(mode="json"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=100)
    args = p.parse_args()
    asyncio.run(layer(args.rounds, args.requests))
    for f in (orjson_numpy, pydantic_model):
        t = min(timeit.Timer(f, timer=time.process_time).repeat(args.rounds, 20)) / 20
        print(f"a 64 x {DIM} answer, {f.__name__}: {t * 1e3:.2f} ms CPU")


if __name__ == "__main__":
    main()
