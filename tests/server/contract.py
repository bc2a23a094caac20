"""The HTTP contract: a response is checked against the OpenAPI document the server publishes (built
here from the same code, `create_app(...).openapi()`): its status must be documented for the
operation, its media type listed, and its JSON body valid against the documented schema.

`record_responses()` records every response that httpx returns in the tests (real sockets and the
ASGI transport alike); tests/server/conftest.py checks them all after each test."""

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema_rs

__all__ = ["Recorded", "openapi", "problems", "record_responses"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"


@dataclass
class Recorded:
    method: str
    path: str
    status: int
    content_type: str
    body: bytes

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status} {self.content_type}: {self.body[:200]!r}"


@cache
def openapi() -> dict[str, Any]:
    from d2v.server.app import create_app
    from d2v.server.config import ServeConfig

    return create_app(ServeConfig()).openapi()


@cache
def _validator(pointer: str) -> Any:
    """A validator for the schema at this JSON pointer of the document (its $refs resolved in it)."""
    spec = openapi()
    node: Any = spec
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return jsonschema_rs.validator_for({"$schema": DRAFT, "components": spec["components"], **node})


def _template(path: str) -> str:
    """The document's path that a request path falls under: itself, or a template whose parameters
    (`/v1/models/{model}`) match it."""
    paths = openapi()["paths"]
    if path in paths:
        return path
    for template in paths:
        if "{" in template and re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", ".+", re.escape(template)), path):
            return template
    return path


def problems(r: Recorded) -> list[str]:
    """What in this response the document does not allow (nothing for operations it does not list:
    unknown paths and methods, /docs, /openapi.json)."""
    path = _template(r.path)
    operation = openapi()["paths"].get(path, {}).get(r.method.lower())
    if operation is None:
        return []
    responses = operation["responses"]
    documented = responses.get(str(r.status)) or responses.get("default")
    if documented is None:
        return [f"{r}: status {r.status} is not documented (documented: {', '.join(responses)})"]
    content = documented.get("content") or {}
    media = r.content_type.split(";")[0].strip().lower()
    if not content:
        return [] if not r.body else [f"{r}: a body where the document has none"]
    if media not in content:
        return [f"{r}: media type {media!r} is not documented (documented: {', '.join(content)})"]
    if media != "application/json":
        return []
    try:
        body = json.loads(r.body)
    except ValueError as e:
        return [f"{r}: not JSON ({e})"]
    escaped = path.replace("~", "~0").replace("/", "~1")
    pointer = f"/paths/{escaped}/{r.method.lower()}/responses/{r.status if str(r.status) in responses else 'default'}" \
              f"/content/application~1json/schema"
    return [f"{r}: {e.message} at {list(e.instance_path)}" for e in _validator(pointer).iter_errors(body)]


def _record(into: list[Recorded], response: httpx.Response) -> None:
    if not response.is_stream_consumed:
        return
    into.append(Recorded(response.request.method, urlsplit(str(response.request.url)).path, response.status_code,
                         response.headers.get("content-type", ""), response.content))


@contextlib.contextmanager
def record_responses() -> Iterator[list[Recorded]]:
    """Record every response httpx clients (sync or async, any transport) return inside the block."""
    into: list[Recorded] = []
    send, asend = httpx.Client.send, httpx.AsyncClient.send

    def sync_send(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = send(self, request, **kw)
        _record(into, response)
        return response

    async def async_send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = await asend(self, request, **kw)
        _record(into, response)
        return response

    httpx.Client.send, httpx.AsyncClient.send = sync_send, async_send
    try:
        yield into
    finally:
        httpx.Client.send, httpx.AsyncClient.send = send, asend
