"""The HTTP service (docs/http-api.md): `config` (ServeConfig), `schemas` (pydantic bodies),
`decode` (images/audio/text -> model inputs), `backends` (PyTorch, onnxruntime), `engine` (queues,
dynamic batching, warm-up, supervised batching loops, health; never imports FastAPI), `metrics`
(Prometheus), `hosts` (the Host header check), `app` (`create_app`, thin routes), `protocol`
(uvicorn's HTTP protocol with connection deadlines and caps) and `serve` (the `d2v serve` command).

Imports are lazy so that `import d2v.server` pulls in neither torch nor FastAPI.
"""

from typing import Any

__all__ = ["Engine", "ServeConfig", "add_serve_arguments", "create_app", "run_serve"]


def __getattr__(name: str) -> Any:
    if name == "ServeConfig":
        from d2v.server.config import ServeConfig

        return ServeConfig
    if name == "Engine":
        from d2v.server.engine import Engine

        return Engine
    if name == "create_app":
        from d2v.server.app import create_app

        return create_app
    if name in ("add_serve_arguments", "run_serve"):
        from d2v.server import serve

        return getattr(serve, name)
    raise AttributeError(name)
