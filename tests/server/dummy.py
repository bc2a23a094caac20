"""A dummy text backend for engine and app tests: embeddings computed from token ids with numpy, so
batching mistakes show up as wrong numbers; it can be made slow or broken, or held mid-batch."""

import threading
import time
from pathlib import Path

import numpy as np

from d2v.server.backends.base import Backend, Task, collate


class DummyBackend(Backend):
    backend = "dummy"
    device = "cpu"

    def __init__(self, name: str = "dummy", delay: float = 0.0, labels: list[str] | None = None):
        config = {"modality": "text", "encoder": {"embed_dim": 8, "text": {"vocab_size": 300}},
                  "head": {"labels": labels, "pooling": "mean"} if labels else None,
                  "preprocessing": {"max_tokens": 16, "pad_id": 1, "bos_id": 0, "eos_id": 2}}
        self._describe(name, Path("."), config)
        self.delay, self.broken, self.batches = delay, False, []
        self.running = threading.Event()
        """Set when a batch starts."""
        self.gate: threading.Event | None = None
        """When given, every batch waits for it to be set (up to 30 s) after setting `running`."""
        self.threads = 0
        """The threads a pass uses alone (0: none declared, so the engine never calls `use_threads`)."""
        self.lanes_seen: list[tuple[int, int]] = []
        """Per batch: (its threads as set by `use_threads` in the running thread, batches running at its start)."""
        self._local = threading.local()
        self._in_run = 0
        self._lock = threading.Lock()

    def use_threads(self, n: int) -> None:
        self._local.threads = n

    def run(self, items: list[np.ndarray], tasks: list[Task]) -> list[np.ndarray]:
        with self._lock:
            self._in_run += 1
            self.lanes_seen.append((getattr(self._local, "threads", 0), self._in_run))
        try:
            return self._run(items, tasks)
        finally:
            with self._lock:
                self._in_run -= 1

    def _run(self, items: list[np.ndarray], tasks: list[Task]) -> list[np.ndarray]:
        self.running.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.broken:
            raise RuntimeError("CUDA error: out of memory (simulated)")
        if any((x == 99).any() for x in items):
            raise ValueError("token 99 is poison (simulated bad input)")
        self.batches.append([len(x) for x in items])
        time.sleep(self.delay)
        x, mask = collate("text", items, 1)
        out = []
        for row, m, t in zip(x, mask, tasks, strict=True):
            real = row[~m].astype(np.float32)
            v = np.array([real.sum(), len(real), real.mean(), real.max(), 1, 2, 3, 4], np.float32)
            out.append(v[:3] if t.kind == "classify" else v)
        return out


class DummyDecoder:
    modality = "text"

    def __call__(self, value, index, truncate=True, content_type=None):
        from d2v.server.decode import Decoded, InputError

        if isinstance(value, bytes):
            value = value.decode()
        if value == "bad":
            raise InputError(index, "this input is bad")
        ids = np.array([0, *[4 + ord(c) % 200 for c in value], 2], np.int64)
        return Decoded(ids, len(ids), len(ids))
