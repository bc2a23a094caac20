"""`d2v serve --workers N`: N serving processes on one port, under a supervisor.

The supervisor (the `d2v serve` process) binds the listening socket once (so a port in use fails at
once, as with one process), then spawns N worker processes: fresh interpreters, not forks, each
loading every model and running `serve.serve` on the shared socket; the kernel gives each new
connection to whichever worker accepts it first, so a busy worker leaves new connections to the idle
ones. The supervisor loads no model and answers no request.

- Health: `/health` and `/ready` answer for the worker that takes the connection (its models, its
  batching loops); every answer names that worker's process id in an `x-d2v-worker` header.
- Metrics: `/metrics` from any worker renders all workers' counters summed (`metrics.py`, through
  prometheus_client's multiprocess directory, a temporary directory the supervisor removes at exit).
- Shutdown: SIGTERM or SIGINT to the supervisor is passed to every worker, each drains its in-flight
  requests (`--drain-seconds`), and the supervisor exits 0 once all have stopped.
- A worker that dies after loading its models is restarted (logged, and its live gauges dropped);
  more than `MAX_RESTARTS` deaths within `RESTART_WINDOW_S` stop the server with status 1. A worker
  that dies before its models are loaded (a bad model, say) stops the server with the worker's status
  (2 for models that cannot be loaded, as with one process).
- Workers ask the kernel (Linux) for SIGTERM when the supervisor dies, so none outlives it.
"""

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any

from d2v.server.config import ServeConfig

__all__ = ["MAX_RESTARTS", "RESTART_WINDOW_S", "bind_listener", "supervise"]

MAX_RESTARTS = 5
"""Worker deaths tolerated within `RESTART_WINDOW_S` before the server gives up."""
RESTART_WINDOW_S = 60.0
BACKLOG = 2048
"""Connections the kernel queues before a worker accepts them (uvicorn's default)."""

log = logging.getLogger("d2v.serve")


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, inheritable by the workers."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _die_with_supervisor() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (elsewhere: nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(cfg: ServeConfig, log_level: str, sock: socket.socket, loaded: Any) -> None:
    """A worker process: serve on the shared socket until SIGTERM."""
    _die_with_supervisor()
    os.environ["D2V_WORKER"] = str(os.getpid())
    from d2v.server.serve import serve

    sys.exit(serve(cfg, log_level, sock=sock, on_loaded=loaded.set))


def supervise(cfg: ServeConfig, log_level: str = "info") -> int:
    """Run `cfg.workers` serving processes on one socket until SIGTERM/SIGINT; returns the exit status."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sock = bind_listener(cfg.host, cfg.port)
    except OSError as e:
        print(f"d2v serve: cannot listen on {cfg.host}:{cfg.port}: {e}", file=sys.stderr)
        return 1
    metrics_dir = tempfile.mkdtemp(prefix="d2v-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the workers
    from prometheus_client import multiprocess

    context = multiprocessing.get_context("spawn")
    stopping: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: stopping.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    procs: dict[int, tuple[Any, Any]] = {}

    def start(i: int) -> None:
        loaded = context.Event()
        p = context.Process(target=_worker, args=(cfg, log_level, sock, loaded), name=f"d2v-worker-{i}")
        p.start()
        procs[i] = (p, loaded)

    deaths: deque[float] = deque()
    status = 0
    try:
        for i in range(cfg.workers):
            start(i)
        log.info("supervising %d workers on %s:%d", cfg.workers, cfg.host, cfg.port)
        while not stopping and status == 0:
            wait([p.sentinel for p, _ in procs.values()], timeout=0.5)
            for i, (p, loaded) in list(procs.items()):
                if p.exitcode is None:
                    continue
                multiprocess.mark_process_dead(p.pid, metrics_dir)
                if not loaded.is_set():
                    log.error("worker %d exited with status %s before its models were loaded: stopping", i,
                              p.exitcode)
                    status = p.exitcode if p.exitcode and p.exitcode > 0 else 1
                    break
                now = time.monotonic()
                deaths.append(now)
                while deaths and deaths[0] < now - RESTART_WINDOW_S:
                    deaths.popleft()
                if len(deaths) > MAX_RESTARTS:
                    log.error("workers died %d times within %g s: stopping", len(deaths), RESTART_WINDOW_S)
                    status = 1
                    break
                log.warning("worker %d (pid %d) exited with status %s: restarting it", i, p.pid, p.exitcode)
                start(i)
    finally:
        for p, _ in procs.values():
            if p.exitcode is None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + cfg.drain_seconds + 10
        for p, _ in procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
        for p, _ in procs.values():
            if p.exitcode is None:
                log.warning("worker pid %d did not stop within --drain-seconds: killing it", p.pid)
                p.kill()
                p.join()
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status
