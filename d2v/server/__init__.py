"""The HTTP service (docs/http-api.md): `config` (ServeConfig), `schemas` (pydantic bodies),
`decode` (images/audio/text -> model inputs), `backends` (PyTorch, onnxruntime), `engine` (queues,
dynamic batching, warm-up, supervised batching loops, health; never imports FastAPI), `metrics`
(Prometheus), `hosts` (the Host header check), `app` (`create_app`, thin routes), `protocol`
(uvicorn's HTTP protocol with connection deadlines and caps) and `serve` (the `d2v serve` command).

Imports are lazy so that `import d2v.server` pulls in neither torch nor FastAPI.
"""

from d2v.lazy import lazy_exports

__all__ = ["Engine", "ServeConfig", "add_serve_arguments", "create_app", "run_serve"]


__getattr__, __dir__ = lazy_exports(__name__, {"d2v.server.config": ("ServeConfig",), "d2v.server.engine": ("Engine",),
                                               "d2v.server.app": ("create_app",),
                                               "d2v.server.serve": ("add_serve_arguments", "run_serve")})
