"""The playground page of `d2v serve` (docs/http-api.md#the-playground): one static HTML page, its
script and its style sheet, shipped inside the package and served by d2v itself (no build step, no
CDN: the machine that runs the server may be offline). The page calls the server's own API
(`/models`, `/classify`, `/transcribe`, `/embed`) from the browser, so what it shows is what a client
gets.

This module only finds the files and says how to serve them; the routes are in `server/app.py`
(the engine and this module never import the web framework).
"""

from functools import cache
from importlib import resources

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE_PATHS", "asset", "asset_names", "open_paths"]

PAGE_PATHS = ("/", "/playground")
"""The paths that answer the page itself."""
ASSET_PREFIX = "/playground/"
"""The assets' paths: `/playground/NAME`."""
_MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")
"""The page runs only its own files and talks only to its own server; no other site may frame it."""


def asset_names() -> list[str]:
    """The files the page is made of."""
    return list(_MEDIA_TYPES)


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """(the file's bytes, its media type), or None when `name` is not one of the page's files."""
    if name not in _MEDIA_TYPES:
        return None
    return resources.files(__name__).joinpath(name).read_bytes(), _MEDIA_TYPES[name]


def open_paths() -> set[str]:
    """Every path of the page and its assets: reachable without the API key when the playground is on
    (the API calls the page makes still need it)."""
    return {*PAGE_PATHS, *(ASSET_PREFIX + name for name in _MEDIA_TYPES)}
