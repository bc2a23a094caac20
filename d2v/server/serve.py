"""`d2v serve`: load the models (before the port is bound), then run uvicorn; SIGTERM stops
accepting connections, lets in-flight requests finish (up to --drain-seconds), then exits."""

import argparse
import logging
import sys

from d2v.server.config import ServeConfig, add_config_arguments, config_from_args, demo_model_dirs

__all__ = ["add_serve_arguments", "run_serve", "serve"]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def serve(cfg: ServeConfig, log_level: str = "info") -> int:
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
    for m in engine.models():
        log.info("loaded %s (%s, %d dims, %s on %s) from %s", m["name"], m["modality"], m["dimensions"],
                 m["backend"], m["device"], m["path"])
    app = create_app(cfg, engine)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=int(cfg.drain_seconds) or None)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if not cfg.models:
        found = demo_model_dirs()
        if not found:
            print("d2v serve: no models given and no demo models found: looked for directories with a "
                  "config.json under ./models and under the d2v source checkout's models/. Train them "
                  "(README: demo models) or pass --model PATH.", file=sys.stderr)
            return 2
        cfg.models = [str(p) for p in found]
    return serve(cfg, args.log_level)
