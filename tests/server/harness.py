"""The `d2v serve` subprocess the server tests talk to, and its fixed settings (a plain module,
imported by conftest.py and by tests, so that no test imports a conftest)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_with_open_files(n: int | None) -> list[str]:
    """The command that starts `python -m MODULE ...` with a soft RLIMIT_NOFILE of `n` (as the usual
    1024, scaled down), set in the process itself before the module runs."""
    if n is None:
        return [sys.executable, "-m"]
    code = ("import resource, runpy, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
            "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", code]


BLOCKED = "blocked import"


def python_without(*packages: str) -> list[str]:
    """The command that starts `python -m MODULE ...` in a process where importing any of `packages`
    (or their submodules) raises ImportError, after printing "blocked import NAME" and the importing
    stack to stderr, so that an import caught by the code is still seen."""
    code = ("import runpy, sys, traceback\n"
            "class Blocker:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.partition('.')[0] in {packages!r}:\n"
            f"            print('{BLOCKED}', name, file=sys.stderr)\n"
            "            traceback.print_stack()\n"
            "            raise ImportError(f'{name} may not be imported in this process')\n"
            "sys.meta_path.insert(0, Blocker())\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")
    return [sys.executable, "-c", code]


class Server:
    """A `d2v serve` subprocess on 127.0.0.1 (`open_files`: its soft RLIMIT_NOFILE at start;
    `python`: the command that runs `-m d2v.cli` instead, e.g. `python_without("torch")`)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 120.0,
                 open_files: int | None = None, python: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115  (read by output(); gone when closed)
        self.proc = subprocess.Popen(
            [*(python or python_with_open_files(open_files)), "d2v.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--threads", "1", "--log-level", "warning", *args],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"d2v serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"d2v serve was not ready within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


API_KEY = "test-key-123"
CORS_ORIGIN = "https://app.example"
