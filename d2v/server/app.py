"""The HTTP layer: `create_app(cfg, engine=None)` with thin routes over the engine, JSON errors with
the statuses of docs/http-api.md, an optional Bearer API key, a Host check, optional CORS, timing
headers and Prometheus metrics.

Routes: /embed, /classify, /transcribe (CTC speech recognizers), the OpenAI shapes /v1/embeddings,
/v1/audio/transcriptions and /v1/models, and /models, /health, /ready, /metrics; with the playground on
(`ServeConfig.playground_on`), the page at / and /playground and its files under /playground/.

Statuses: 400 undecodable input or a Host that is not the server's, 401 missing/wrong API key, 404
unknown model, 413 too large (payload, inputs per request, tokens, seconds of audio, pixels), 415
unsupported media, 422 schema or an impossible request, 429 overloaded (with Retry-After), 500 a
failed forward pass, 503 not ready / draining / unhealthy / a crashed batcher / too many connections.
Error messages never carry server paths or object reprs; a client that disconnects before its body
arrives is one INFO line in the log.
"""

import asyncio
import base64
import hmac
import logging
import os
import re
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, ClassVar

import numpy as np
import orjson
from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse as _StarletteJSONResponse
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from d2v.server.config import ServeConfig
from d2v.server.decode import InputError, InputTooLarge, UnsupportedMedia
from d2v.server.engine import (
    BadRequest,
    Engine,
    InferenceError,
    ModelUnavailable,
    ModelWorker,
    NotReady,
    Outcome,
    Overloaded,
    Transcripts,
    UnknownModel,
    finish_embeddings,
    top_predictions,
)
from d2v.server.hosts import HostCheckMiddleware
from d2v.server.metrics import CONTENT_TYPE_LATEST
from d2v.server.playground import CONTENT_SECURITY_POLICY, PAGE_PATHS, asset, open_paths
from d2v.server.schemas import (
    Classification,
    ClassifyRequest,
    ClassifyResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    HealthResponse,
    ModelsResponse,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIModel,
    OpenAIModelsResponse,
    OpenAITranscriptionRequest,
    OpenAITranscriptionResponse,
    ReadyResponse,
    TranscribeRequest,
    TranscribeResponse,
    TranscribeUsage,
    Transcript,
    Upload,
    multipart_schema,
)

__all__ = ["create_app"]

log = logging.getLogger("d2v.serve")

OPEN_PATHS = {"/health", "/ready", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect"}
ROUTES = {"/embed", "/classify", "/transcribe", "/v1/embeddings", "/v1/audio/transcriptions", "/v1/models", "/models",
          "/health", "/ready", "/metrics"}
MODEL_ROUTE = "/v1/models/{model}"
"""The metrics' route label of `GET /v1/models/NAME`, whatever the name."""


class PayloadTooLarge(Exception):
    """The request body exceeds the payload limit (413)."""


# typed error -> (status, error type); subclasses first
_ERRORS: list[tuple[type[Exception], int, str]] = [
    (PayloadTooLarge, 413, "payload_too_large"),
    (InputTooLarge, 413, "input_too_large"),
    (UnsupportedMedia, 415, "unsupported_media_type"),
    (InputError, 400, "invalid_input"),
    (UnknownModel, 404, "model_not_found"),
    (BadRequest, 422, "invalid_request"),
    (ValidationError, 422, "invalid_request"),
    (Overloaded, 429, "overloaded"),
    (ModelUnavailable, 503, "model_unavailable"),
    (NotReady, 503, "not_ready"),
    (InferenceError, 500, "inference_error"),
]


class JSONResponse(_StarletteJSONResponse):
    """JSON rendered by orjson, numpy arrays (embeddings) included: a 768-float embedding takes
    ~0.4 ms through the standard library's float formatting on a slow CPU core, ~0.02 ms here."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def clean_message(message: str) -> str:
    """A message fit for a client: no object reprs (`<_io.BytesIO object at 0x...>`, which Pillow and
    libsndfile put in theirs)."""
    return _OBJECT_REPR.sub("", message)


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": clean_message(message)}}, status, headers=headers)


def _validation_message(e: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


class ServingMiddleware:
    """Pure ASGI: payload limit, API key, timing headers (x-total-time, and x-decode-time,
    x-queue-time, x-inference-time where a route set them) and request counts by status."""

    def __init__(self, app: Callable, cfg: ServeConfig, metrics_getter: Callable[[], Any]):
        self.app, self.cfg, self.metrics = app, cfg, metrics_getter
        self.worker = os.environ.get("D2V_WORKER", "").encode()  # --workers: the answering process's id
        self.open_paths = OPEN_PATHS | (open_paths() if cfg.playground_on() else set())

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else MODEL_ROUTE if path.startswith("/v1/models/") else "other"
        state = scope.setdefault("state", {})
        status_holder = {"status": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                for name, seconds in (state.get("timing") or {}).items():
                    headers.append((f"x-{name}-time".encode(), f"{seconds * 1e3:.3f}".encode()))
                headers.append((b"x-total-time", f"{(time.perf_counter() - start) * 1e3:.3f}".encode()))
                if self.worker:
                    headers.append((b"x-d2v-worker", self.worker))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if self.cfg.api_key and path not in self.open_paths:
                auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
                token = auth[7:] if auth[:7].lower() == "bearer " else ""
                if not hmac.compare_digest(token.encode(), self.cfg.api_key.encode()):
                    resp = error_response(401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)",
                                          {"WWW-Authenticate": "Bearer"})
                    return await resp(scope, receive, send_wrapper)
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.cfg.max_payload_bytes:
                resp = error_response(413, "payload_too_large", f"the body of {int(length)} bytes exceeds the limit "
                                      f"of {self.cfg.max_payload_bytes}")
                return await resp(scope, receive, send_wrapper)
            received = 0

            async def receive_limited() -> dict:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > self.cfg.max_payload_bytes:
                    raise PayloadTooLarge(f"the body exceeds the limit of {self.cfg.max_payload_bytes} bytes")
                return message

            await self.app(scope, receive_limited, send_wrapper)
        finally:
            metrics = self.metrics()
            if metrics is not None:
                metrics.requests.labels(route, str(status_holder["status"])).inc()


class _ParsedRequest(Request):
    """A request whose body the route has read and parsed already (orjson, or a multipart form turned
    into the model's fields), handed to FastAPI's own body handling as JSON (FastAPI's documented way
    to customise it: a Request subclass in a custom APIRoute)."""

    def __init__(self, request: Request, data: Any):
        headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
        super().__init__({**request.scope, "headers": [*headers, (b"content-type", b"application/json")]},
                         request.receive)
        self._data = data

    async def body(self) -> bytes:
        return b"{}"  # not empty: FastAPI then asks json()

    async def json(self) -> Any:
        return self._data


def _body_media_types(route: APIRoute) -> list[str]:
    """The media types the route's document lists for its body: its typed parameter's (application/json,
    or what `Body(media_type=...)` declares), then the alternative its `openapi_extra` adds (the
    multipart form of a JSON body)."""
    declared = route.body_field.field_info.media_type  # type: ignore[union-attr]
    extra = ((route.openapi_extra or {}).get("requestBody") or {}).get("content") or {}
    return [declared, *(m for m in extra if m != declared)]


class TypedBodyRoute(APIRoute):
    """A route whose endpoint takes its body as a typed pydantic parameter (FastAPI validates it and
    writes its JSON schema into the document), read here first, in a media type its document lists:
    JSON through orjson (malformed JSON is a 422 that says so; a body over the payload limit a 413,
    never FastAPI's generic 400), or a multipart form (`_read_form`). Any other content type: 415.
    `create_app` subclasses it with its configuration (the form limits)."""

    cfg: ClassVar[ServeConfig] = ServeConfig()

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        types, cfg = _body_media_types(self), self.cfg
        model: type[BaseModel] = self.body_field.field_info.annotation  # type: ignore[assignment]
        uploads = _upload_fields(model)
        hint = f" (the file as {', '.join(repr(u) for u in uploads)})" if uploads else ""

        async def typed_body_handler(request: Request) -> Response:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype == "multipart/form-data" and ctype in types:
                data, request.state.uploads = await _read_form(request, cfg, model)
            elif ctype in ("application/json", "") and "application/json" in types:
                try:
                    data = orjson.loads(await request.body())
                except orjson.JSONDecodeError as e:
                    raise BadRequest(f"the body is not valid JSON: {e}") from None
                request.state.uploads = []
            else:
                raise UnsupportedMedia(None, f"content type {ctype!r}: send {' or '.join(types)}{hint}")
            return await handler(_ParsedRequest(request, data))

        return typed_body_handler


def _upload_fields(model: type[BaseModel]) -> list[str]:
    """The fields of a request model that a form's uploads fill (typed `Upload`)."""
    return [name for name, f in model.model_fields.items() if f.annotation is Upload]


async def _read_form(request: Request, cfg: ServeConfig,
                     model: type[BaseModel]) -> tuple[dict[str, Any], list[tuple[bytes, str | None]]]:
    """A multipart form -> (the request model's fields, the `file` uploads of a model without such a
    field: the inputs of /embed, /classify and /transcribe, as (bytes, content type) pairs).

    `inputs` takes all its values (none: an empty list); an upload field (typed `Upload`) all its parts,
    read (the model says how many it takes; a plain value stands for its UTF-8 bytes); any other field
    its last value. An empty value is a field left out (HTML forms send them)."""
    form = await request.form(max_files=cfg.max_inputs + 1, max_fields=cfg.max_inputs + 32)
    upload_fields = _upload_fields(model)
    fields: dict[str, Any] = {name: [] for name in ("inputs", *upload_fields) if name in model.model_fields}
    files: list[Any] = []
    for key in form:
        values = form.getlist(key)
        if key in upload_fields:
            fields[key] = [Upload(v.encode(), None) if isinstance(v, str) else Upload(await v.read(), v.content_type)
                           for v in values]
        elif key == "file":
            files = values
        elif key == "inputs":
            fields["inputs"] = [v for v in values if isinstance(v, str) and v]
        elif values[-1] != "":
            fields[key] = values[-1]
    return fields, [(await f.read(), f.content_type) for f in files if not isinstance(f, str)]


def _inputs(request: Request, values: list[str | list[int]]) -> tuple[list[str | bytes | list[int]], list[str | None]]:
    """A request's uploads (multipart) and its `inputs` values: (inputs, their content types)."""
    uploads: list[tuple[bytes, str | None]] = getattr(request.state, "uploads", [])
    return [u for u, _ in uploads] + list(values), [t for _, t in uploads] + [None] * len(values)


def _check_count(n: int, cfg: ServeConfig) -> None:
    if n == 0:
        raise BadRequest("no inputs")
    if n > cfg.max_inputs:
        raise InputTooLarge(None, f"{n} inputs exceed the limit of {cfg.max_inputs} per request")


def _encode(x: np.ndarray, fmt: str) -> np.ndarray | str:
    """(D,) float32 -> base64 of its little-endian bytes, or the array itself (orjson writes it)."""
    if fmt == "base64":
        return base64.b64encode(x.astype("<f4").tobytes()).decode("ascii")
    return np.ascontiguousarray(x, dtype=np.float32)


def _timing(request: Request, decode_s: float, outcome: Outcome | Transcripts) -> None:
    request.state.timing = {"decode": decode_s, "queue": outcome.queue_s, "inference": outcome.inference_s}


_STATUSES = {
    400: "undecodable input (which input, why), or a Host header that is not one of the server's names",
    401: "missing or wrong API key", 404: "unknown model",
    413: "too large: payload, inputs per request, tokens, seconds of audio or pixels",
    415: "unsupported media type", 422: "schema error or a request the model cannot answer",
    429: "overloaded: retry after the Retry-After header",
    431: "request line and headers too large",
    500: "the forward pass failed, or an internal error",
    503: "not ready, shutting down, a model's batching loop crashed, or too many open connections"}


def _status_docs(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorResponse, "description": _STATUSES[c]} for c in codes}


_POST_STATUSES = _status_docs(400, 401, 404, 413, 415, 422, 429, 431, 500, 503)


def _form_docs(schema: type[BaseModel]) -> dict[str, Any]:
    """The multipart/form-data alternative of a JSON body, generated from the same request model
    (FastAPI writes the application/json one from the endpoint's typed parameter); listing it is what
    makes `TypedBodyRoute` take forms on the route."""
    return {"requestBody": {"content": {"multipart/form-data": {"schema": multipart_schema(schema)}}}}


def create_app(cfg: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The FastAPI app. Its lifespan builds the engine from `cfg` unless one is given, starts it
    (warm-up) and puts it on `app.state.engine`; on shutdown it drains it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        eng = engine or await asyncio.to_thread(Engine, cfg)
        app.state.engine = eng
        await eng.start()
        try:
            yield
        finally:
            await eng.stop()

    app = FastAPI(title="d2v", description="data2vec 2.0 embeddings and classification for images, audio and text, "
                  "and speech recognition", lifespan=lifespan, default_response_class=JSONResponse)
    app.state.engine = engine
    app.router.route_class = type("TypedBodyRoute", (TypedBodyRoute,), {"cfg": cfg})
    # outermost last: the Host check, then CORS (preflights need no API key), then auth, limits, metrics
    app.add_middleware(ServingMiddleware, cfg=cfg,
                       metrics_getter=lambda: getattr(app.state.engine, "metrics", None))
    if cfg.origins():
        app.add_middleware(CORSMiddleware, allow_origins=cfg.origins(), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"], max_age=600,
                           expose_headers=["retry-after", "x-total-time", "x-decode-time", "x-queue-time",
                                           "x-inference-time"])
    hosts = cfg.host_names()
    app.add_middleware(HostCheckMiddleware, allowed=hosts, reject=lambda host: error_response(
        400, "invalid_host", f"Host {host!r} is not a name of this server (allowed: {', '.join(hosts)}; "
        "see --allowed-hosts)"))

    def get_engine(request: Request) -> Engine:
        eng = request.app.state.engine
        if eng is None:
            raise NotReady("the engine is not loaded yet")
        return eng

    def redact(message: str) -> str:
        """Model directories' server paths -> the models' names."""
        eng: Engine | None = app.state.engine
        for w in (eng.workers.values() if eng is not None else ()):
            for path in sorted({str(w.backend.directory.resolve()), str(w.backend.directory)} - {"."}, key=len,
                               reverse=True):
                message = message.replace(path, w.name)
        return message

    async def typed_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ValidationError):
            return error_response(422, "invalid_request", _validation_message(exc))
        for cls, status, kind in _ERRORS:
            if isinstance(exc, cls):
                headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
                return error_response(status, kind, redact(str(exc)), headers)
        return error_response(500, "internal_error", redact(f"{type(exc).__name__}: {exc}"))

    for cls, _, _ in _ERRORS:
        app.add_exception_handler(cls, typed_error)
    app.add_exception_handler(Exception, typed_error)  # anything else: a JSON 500, never a traceback

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        """Not an error of the server: one line in the log, no traceback; nobody reads the answer."""
        reason = (request.scope.get("state") or {}).get("disconnect_reason") or "it disconnected"
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s %s from %s ended before its body arrived: %s", request.method, request.url.path, client, reason)
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def schema_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    async def _embed(request: Request, worker: ModelWorker, values: list, types: list, truncate: bool,
                     pooling: str | None, dimensions: int | None, normalize: bool
                     ) -> tuple[np.ndarray, int]:
        eng = get_engine(request)
        _check_count(len(values), cfg)
        eng.check_embed(worker, pooling, dimensions)
        with eng.admit(worker, len(values)):
            decoded, decode_s = await eng.decode(worker, values, truncate, types)
            outcome = await eng.embed(worker, decoded, pooling, dimensions, admitted=True)
        _timing(request, decode_s, outcome)
        return finish_embeddings(outcome.values, dimensions, normalize), sum(d.tokens for d in decoded)

    @app.post("/embed", response_model=EmbedResponse, responses=_POST_STATUSES,
              openapi_extra=_form_docs(EmbedRequest))
    async def embed(request: Request, req: EmbedRequest) -> JSONResponse:
        """Embeddings of images, audio or text (JSON or multipart)."""
        values, types = _inputs(request, req.inputs)
        worker = get_engine(request).resolve(req.model, req.modality)
        x, tokens = await _embed(request, worker, values, types, req.truncate, req.pooling, req.dimensions,
                                 req.normalize)
        data = [{"index": i, "embedding": _encode(v, req.encoding_format)} for i, v in enumerate(x)]
        return JSONResponse({"object": "list", "model": worker.name, "modality": worker.modality, "data": data,
                             "usage": {"inputs": len(values), "tokens": tokens}})

    @app.post("/classify", responses=_POST_STATUSES, openapi_extra=_form_docs(ClassifyRequest))
    async def classify(request: Request, req: ClassifyRequest) -> ClassifyResponse:
        """Top-k labels with softmax scores (models with a classification head)."""
        values, types = _inputs(request, req.inputs)
        eng = get_engine(request)
        worker = eng.resolve(req.model, req.modality)
        eng.check_classify(worker)
        _check_count(len(values), cfg)
        with eng.admit(worker, len(values)):
            decoded, decode_s = await eng.decode(worker, values, req.truncate, types)
            outcome = await eng.classify(worker, decoded, admitted=True)
        _timing(request, decode_s, outcome)
        labels = worker.backend.labels
        data = [Classification(index=i, predictions=top_predictions(v, labels, req.top_k))
                for i, v in enumerate(outcome.values)]
        return ClassifyResponse(model=worker.name, modality=worker.modality, data=data,
                                usage={"inputs": len(values), "tokens": sum(d.tokens for d in decoded)})

    @app.post("/v1/embeddings", response_model=OpenAIEmbeddingResponse, responses=_POST_STATUSES)
    async def openai_embeddings(request: Request, req: OpenAIEmbeddingRequest) -> JSONResponse:
        """The OpenAI embeddings shape; 'modality' lets image and audio data URIs through."""
        values, types = _inputs(request, req.input)
        eng = get_engine(request)
        modality = req.modality or (None if req.model else "text")
        worker = eng.resolve(req.model, modality)
        x, tokens = await _embed(request, worker, values, types, True, None, req.dimensions, True)
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
                for i, v in enumerate(x)]
        return JSONResponse({"object": "list", "data": data, "model": worker.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _transcribe(request: Request, worker: ModelWorker, values: list, types: list) -> tuple[list[str], float]:
        """Transcripts of a request's audio, and the seconds of audio it sent."""
        eng = get_engine(request)
        _check_count(len(values), cfg)
        eng.check_transcribe(worker)
        with eng.admit(worker, len(values)):
            decoded, decode_s = await eng.decode(worker, values, True, types)
            result = await eng.transcribe(worker, decoded, admitted=True)
        _timing(request, decode_s, result)
        return result.texts, sum(d.seconds for d in decoded)

    @app.post("/transcribe", responses=_POST_STATUSES, openapi_extra=_form_docs(TranscribeRequest))
    async def transcribe(request: Request, req: TranscribeRequest) -> TranscribeResponse:
        """Speech to text (greedy CTC decoding) with a speech recognizer (JSON or multipart)."""
        values, types = _inputs(request, req.inputs)
        worker = get_engine(request).resolve_transcriber(req.model)
        texts, seconds = await _transcribe(request, worker, values, types)
        return TranscribeResponse(model=worker.name, data=[Transcript(index=i, text=t) for i, t in enumerate(texts)],
                                  usage=TranscribeUsage(inputs=len(values), seconds=round(seconds, 6)))

    transcription_statuses = {
        **_POST_STATUSES,
        200: {"model": OpenAITranscriptionResponse, "description": "the transcript: JSON, or text/plain with "
              "response_format 'text'", "content": {"text/plain": {"schema": {"type": "string"}}}}}

    @app.post("/v1/audio/transcriptions", response_model=OpenAITranscriptionResponse, responses=transcription_statuses)
    async def openai_transcriptions(
            request: Request, req: Annotated[OpenAITranscriptionRequest, Body(media_type="multipart/form-data")]
    ) -> OpenAITranscriptionResponse | Response:
        """The OpenAI transcription shape: one audio `file` upload (multipart only), `model`, `response_format`."""
        worker = get_engine(request).resolve_transcriber(req.model)
        texts, _ = await _transcribe(request, worker, [req.file.data], [req.file.content_type])
        if req.response_format == "text":
            return Response(texts[0], media_type="text/plain; charset=utf-8")
        return OpenAITranscriptionResponse(text=texts[0])

    def _card(w: ModelWorker) -> OpenAIModel:
        return OpenAIModel(id=w.name, created=w.backend.created, owned_by="d2v")

    @app.get("/v1/models", responses=_status_docs(400, 401, 431, 500, 503))
    async def openai_models(request: Request) -> OpenAIModelsResponse:
        """Loaded models in OpenAI's shape (id, object, created, owned_by)."""
        return OpenAIModelsResponse(data=[_card(w) for w in get_engine(request).workers.values()])

    @app.get("/v1/models/{model:path}", responses=_status_docs(400, 401, 404, 431, 500, 503))
    async def openai_model(request: Request, model: str) -> OpenAIModel:
        """One loaded model in OpenAI's shape."""
        return _card(get_engine(request).resolve(model, None))

    @app.get("/models", responses=_status_docs(400, 401, 431, 500, 503))
    async def models(request: Request) -> ModelsResponse:
        """Loaded models: name, modality, embedding size, labels, backend, device, directory name, kernels."""
        return ModelsResponse.model_validate({"data": get_engine(request).models()})

    @app.get("/health", response_model=HealthResponse, responses={
        **_status_docs(400, 431, 500, 503),
        503: {"model": ErrorResponse, "description": "a model failed its forward pass (then also 'status': "
              "'unhealthy' and each model's state under 'models'), or the server is not ready"}})
    async def health(request: Request) -> HealthResponse | JSONResponse:
        """200 only while every model answers a real forward pass."""
        eng = get_engine(request)
        if not eng.ready:
            raise NotReady("the server is warming up or shutting down")
        status = await eng.health()
        ok = all(v == "ok" for v in status.values())
        if not ok:
            failed = "; ".join(f"{k}: {v}" for k, v in status.items() if v != "ok")
            return JSONResponse({"status": "unhealthy", "models": status,
                                 "error": {"type": "unhealthy", "message": failed}}, 503)
        return HealthResponse(status="ok", models=status)

    @app.get("/ready", responses=_status_docs(400, 431, 500, 503))
    async def ready(request: Request) -> ReadyResponse:
        """200 once warm-up is done (503 before, and while draining)."""
        if not get_engine(request).ready:
            raise NotReady("the models are warming up or the server is shutting down")
        return ReadyResponse(status="ready")

    @app.get("/metrics", response_class=Response, responses={
        200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **_status_docs(400, 431, 500, 503)})
    async def metrics(request: Request) -> Response:
        """Prometheus text."""
        return Response(get_engine(request).render_metrics(), media_type=CONTENT_TYPE_LATEST)

    if cfg.playground_on():
        _add_playground(app)
    return app


def _playground_file(name: str) -> Response:
    found = asset(name)
    if found is None:
        raise StarletteHTTPException(404, f"the playground has no file {name!r}")
    body, media_type = found
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": CONTENT_SECURITY_POLICY, "Referrer-Policy": "no-referrer"}
    return Response(body, media_type=media_type, headers=headers)


def _add_playground(app: FastAPI) -> None:
    """The playground page (`server/playground/`): its own files only, left out of the API's document."""

    async def page() -> Response:
        return _playground_file("index.html")

    for path in PAGE_PATHS:
        app.get(path, include_in_schema=False)(page)

    @app.get("/playground/{name}", include_in_schema=False)
    async def playground_file(name: str) -> Response:
        return _playground_file(name)


