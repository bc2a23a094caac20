"""Fault injection for crash tests: `D2V_EMBED_KILL_AFTER=<point>` makes `d2v embed` SIGKILL itself
right after the named point of its work, so a test can stop a real job at an exact step (a kill from
outside lands wherever the process happens to be) and check that the next run finishes it.

The points are those `reached` is called with: `merge:errors.jsonl`, `merge:embeddings.parquet`,
`merge:embeddings.npy`, `merge:index.jsonl` (each committed), `merge:removed-1` (the first part
removed) and `merge:removed-all` (every part removed).
"""

import os
import signal

__all__ = ["KILL_ENV", "reached"]

KILL_ENV = "D2V_EMBED_KILL_AFTER"


def reached(point: str) -> None:
    """Die here, now, without cleaning up, when the environment names this point."""
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
