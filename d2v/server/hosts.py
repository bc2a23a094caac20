"""The Host header check: a request whose Host is not one of the server's names gets 400.

Without it a web page can reach a server bound to loopback through DNS rebinding (its own domain
re-pointed at 127.0.0.1: the browser then sends that domain as Host, and treats the answers as
same-origin). `ServeConfig.host_names` gives the names: by default localhost, 127.0.0.1 and ::1 when
the server is bound to a loopback address, else any.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["HostCheckMiddleware", "host_allowed", "host_name"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def host_name(header: str) -> str:
    """'Example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(name: str, allowed: list[str]) -> bool:
    """Whether `name` matches an allowed name ('*' any, '*.example.com' its subdomains)."""
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class HostCheckMiddleware:
    """Pure ASGI: answer `reject(host)` to HTTP requests whose Host is not allowed."""

    def __init__(self, app: ASGIApp, allowed: list[str], reject: Callable[[str], ASGIApp]):
        self.app, self.allowed, self.reject = app, allowed, reject

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or "*" in self.allowed:
            return await self.app(scope, receive, send)
        raw = next((v for k, v in scope.get("headers") or [] if k == b"host"), b"").decode("latin-1")
        if host_allowed(host_name(raw), self.allowed):
            return await self.app(scope, receive, send)
        return await self.reject(raw)(scope, receive, send)
