"""Killing a child process at a chosen point of its work, for the crash-safety tests."""

import signal
import subprocess
import time
from collections.abc import Callable


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], after_s: float = 0.0, timeout: float = 120) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (checked every 10 ms), `after_s` later.

    Fails the test if the process ended first (its stderr in the message when it was piped) or if
    `ready()` never held within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(after_s)
    if proc.poll() is not None:
        why = proc.stderr.read() if proc.stderr is not None else ""
        raise AssertionError(f"the process ended (exit {proc.returncode}) before it could be killed: {why}")
    assert ready(), f"the kill point was not reached in {timeout:.0f} s"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
