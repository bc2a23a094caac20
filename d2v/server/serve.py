"""`d2v serve`: load the models (before the port is bound), then run uvicorn; SIGTERM stops
accepting connections, lets in-flight requests finish (up to --drain-seconds), then exits.

At start the soft limit on open files is raised to the hard limit, so that --limit-concurrency
connections fit (the usual soft limit, 1024, was exhausted by a thousand idle connections, after
which every new connection was reset); if the hard limit is too low the cap is lowered to fit, with a
warning. Connections run `protocol.py`'s deadlines and limits.

With `--workers N` (N > 1) this process becomes the supervisor of N serving processes that share
one listening socket (`workers.py`); each runs `serve` on it.
"""

import argparse
import logging
import socket
import sys
from collections.abc import Callable

from d2v.configuration import ConfigError, add_arguments, config_from_args
from d2v.server.config import ServeConfig, demo_model_dirs

RESERVED_FILES = 128
"""File descriptors kept for everything but client connections (model files, logs, pools, the listener)."""

__all__ = ["add_serve_arguments", "run_serve", "serve"]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, ServeConfig, switches=True, config_file=True)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def raise_open_files_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now (None: unknown)."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. a platform cap below the hard limit: keep the soft one
            pass
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(wanted: int, open_files: int | None, log: logging.Logger) -> int:
    """--limit-concurrency, lowered to what the open-files limit allows (0: all it allows)."""
    if open_files is None:
        return wanted
    room = max(open_files - RESERVED_FILES, 16)
    if wanted > room:
        log.warning("the open-files limit (%d) leaves room for about %d connections: capping them there "
                    "(--limit-concurrency asked for %d)", open_files, room, wanted)
    return room if wanted == 0 or wanted > room else wanted


def serve(cfg: ServeConfig, log_level: str = "info", sock: socket.socket | None = None,
          on_loaded: Callable[[], None] | None = None) -> int:
    """Load the models, then answer HTTP until SIGTERM/SIGINT; returns the exit status.

    Args:
        sock: a listening socket to accept on (a `--workers` process) instead of binding host:port.
        on_loaded: called once every model is loaded (the supervisor's sign that a worker started).
    """
    import uvicorn

    from d2v.server.app import create_app
    from d2v.server.engine import Engine

    log = logging.getLogger("d2v.serve")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        engine = Engine(cfg)
    except Exception as e:  # noqa: BLE001 - a clear one-line error instead of a traceback
        print(f"d2v serve: cannot load the models: {e}", file=sys.stderr)
        return 2
    if on_loaded is not None:
        on_loaded()
    for w in engine.workers.values():
        m = w.backend.info()
        log.info("loaded %s (%s, %d dims, %s on %s) from %s", m["name"], m["modality"], m["dimensions"],
                 m["backend"], m["device"], w.backend.directory)
    app = create_app(cfg, engine)
    cap = connection_cap(cfg.limit_concurrency, raise_open_files_limit(), log)
    try:
        from d2v.server.protocol import ConnectionLimits, guarded_protocol

        http = guarded_protocol(ConnectionLimits(cfg.header_timeout_s, cfg.body_timeout_s, cfg.max_header_bytes, cap))
        uvicorn_cap = None
    except ImportError:  # httptools missing (it is in the server extra): uvicorn's own cap, no deadlines
        log.warning("httptools is not installed: header and body deadlines are not enforced")
        http, uvicorn_cap = "auto", cap or None
    log.info("accepting requests for Host %s; CORS origins: %s; at most %d connections", ", ".join(cfg.host_names()),
             ", ".join(cfg.origins()) or "none", cap)
    options = {"log_level": log_level, "access_log": False, "http": http, "limit_concurrency": uvicorn_cap,
               "timeout_keep_alive": cfg.keep_alive_timeout_s,
               "timeout_graceful_shutdown": int(cfg.drain_seconds) or None}
    if sock is None:
        uvicorn.run(app, host=cfg.host, port=cfg.port, **options)
        return 0
    server = uvicorn.Server(uvicorn.Config(app, **options))
    server.run(sockets=[sock])
    return 0 if server.started else 3


def run_serve(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(ServeConfig, args)
    except ConfigError as e:
        print(f"d2v serve: {e}", file=sys.stderr)
        return 2
    if problem := cfg.problem():
        print(f"d2v serve: {problem}", file=sys.stderr)
        return 2
    if not cfg.models:
        found = demo_model_dirs()
        if not found:
            print("d2v serve: no models given and no demo models found: looked for directories with a "
                  "config.json under ./models and under the d2v source checkout's models/. Train them "
                  "(README: demo models) or pass --model PATH.", file=sys.stderr)
            return 2
        cfg.models = [str(p) for p in found]
    if cfg.workers > 1:
        from d2v.server.workers import supervise

        return supervise(cfg, args.log_level)
    return serve(cfg, args.log_level)
