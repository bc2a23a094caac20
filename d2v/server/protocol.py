"""uvicorn's HTTP protocol (httptools) with the connection limits a server open to the network needs.

uvicorn alone arms a timer only between two requests of a kept-alive connection, so a client that
connects and sends nothing, or sends its headers or body a byte at a time, holds a connection (and a
file descriptor) forever. Here every connection has:

- a header deadline: a request's headers must be complete within `header_timeout` seconds of its
  first byte; a connection that opens (or finishes a response) and sends no request within that time
  is closed too (idle kept-alive connections are closed sooner, after uvicorn's `timeout_keep_alive`);
- a body deadline: its body must be complete within `body_timeout` seconds of its headers; otherwise
  the connection is closed, and the application sees a client disconnect (which it logs in one line,
  with the reason recorded here under `scope["state"]["disconnect_reason"]`);
- a header size limit: more than `max_header_bytes` before the end of the headers gets 431;
- a cap on concurrent connections (and running requests): a request arriving beyond
  `limit_concurrency` is answered 503 in the server's JSON error shape, at once.
"""

import json
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ConnectionLimits", "guarded_protocol"]

log = logging.getLogger("d2v.serve")


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection limits (seconds, bytes, connections)."""

    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    limit_concurrency: int


def _error(kind: str, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()
           ) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of an error in the server's JSON shape, closing the connection."""
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *extra]
    return headers, body


def _refusal(status: int, kind: str, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> Any:
    """An ASGI app that answers every request with this error and closes the connection."""
    headers, body = _error(kind, message, extra)

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


_TOO_MANY_CONNECTIONS = _refusal(503, "too_many_connections", "the server has too many open connections; retry later",
                                 ((b"retry-after", b"1"),))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with the deadlines and limits of `ConnectionLimits` (the class attribute
    `limits`, set by `guarded_protocol`)."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # uvicorn's own check answers in plain text; ours is below
        self._timer: Any = None  # the header or the body deadline, whichever applies now
        self._in_head = True  # reading a request's start line and headers
        self._head_bytes = 0

    # -- deadlines ----------------------------------------------------------------------------------
    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        if seconds > 0:
            self._timer = self.loop.call_later(seconds, self._expire, what, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, what: str, seconds: float) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if what == "body" and self.cycle is not None and not self.cycle.response_complete:
            # the application is reading the body: it sees a disconnect and logs it with this reason
            self.scope.setdefault("state", {})["disconnect_reason"] = f"its body did not arrive within {seconds:g} s"
        else:
            log.debug("closing the connection of %s: the request's %s did not arrive within %g s", client, what, seconds)
        self.transport.close()

    # -- uvicorn's protocol hooks -------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
            headers, body = _error("headers_too_large",
                                   f"the request line and headers exceed {self.limits.max_header_bytes} bytes")
            head = b"".join(k + b": " + v + b"\r\n" for k, v in headers)
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n" + head + b"\r\n" + body)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._arm(self.limits.header_timeout, "headers")

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._arm(self.limits.body_timeout, "body")
        limit = self.limits.limit_concurrency
        head = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        refusal = None
        if head > self.limits.max_header_bytes:
            refusal = _refusal(431, "headers_too_large",
                               f"the request line and headers exceed {self.limits.max_header_bytes} bytes")
        elif limit and (len(self.connections) > limit or len(self.tasks) >= limit):
            log.debug("a request beyond the cap of %d connections: 503", limit)
            refusal = _TOO_MANY_CONNECTIONS
        if refusal is None:
            return super().on_headers_complete()
        app, self.app = self.app, refusal
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._in_head = True  # what comes next is a new request
        if self.cycle is not None and self.cycle.response_complete:
            self._arm(self.limits.header_timeout, "headers")  # answered early: the next request must come in time
        else:
            self._disarm()  # the application is at work; the client has nothing to send meanwhile
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._in_head:  # the request was read whole: the next one must start in time
            self._arm(self.limits.header_timeout, "headers")
        # else: answered before its body was read; the rest of the body keeps its deadline
        super().on_response_complete()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`), with these limits."""
    return type("D2vHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
