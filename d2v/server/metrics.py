"""Prometheus metrics of the server, split by stage, in their own registry (one per app).

Under `d2v serve --workers N` every worker process writes its values to files in the directory named
by $PROMETHEUS_MULTIPROC_DIR (set by the supervisor, `workers.py`), and `/metrics`, whichever worker
answers it, renders the sum over all of them: counters and histograms add up (those of a worker
that died and was restarted included), the queue length gauge sums the live workers, and the kernel
fallback gauge is the largest over live workers."""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "PrometheusMetrics"]

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_FILL = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class PrometheusMetrics:
    """The server's Prometheus counters, histograms and gauges (`/metrics`), in a registry of their own."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("d2v_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.inputs = Counter("d2v_inputs", "inputs answered per model", ["model"], registry=r)
        self.queue_seconds = Histogram("d2v_queue_seconds", "time inputs wait in the queue", ["model"],
                                       buckets=_SECONDS, registry=r)
        self.decode_seconds = Histogram("d2v_decode_seconds", "decoding/tokenization time per request", ["model"],
                                        buckets=_SECONDS, registry=r)
        self.inference_seconds = Histogram("d2v_inference_seconds", "forward pass time per batch", ["model"],
                                           buckets=_SECONDS, registry=r)
        self.batch_size = Histogram("d2v_batch_size", "inputs per forward pass", ["model"], buckets=_SIZES,
                                    registry=r)
        self.batch_fill = Histogram("d2v_batch_fill", "real (unpadded) share of each padded batch", ["model"],
                                    buckets=_FILL, registry=r)
        self.batch_budget = Histogram("d2v_batch_budget_fill", "padded batch cost / the batch budget", ["model"],
                                      buckets=_FILL, registry=r)
        self.queue_length = Gauge("d2v_queue_length", "inputs admitted and not answered yet (decoding, queued, "
                                  "running) per model", ["model"], multiprocess_mode="livesum", registry=r)
        self.overloaded = Counter("d2v_overloaded", "requests refused with 429 per model", ["model"], registry=r)
        self.inference_errors = Counter("d2v_inference_errors", "failed forward passes per model", ["model"],
                                        registry=r)
        self.kernel_fallback = Gauge("d2v_kernel_fallback", "1 when a Triton kernel differed from the PyTorch "
                                     "reference at its first CUDA call and the op fell back to the reference",
                                     ["model", "op"], multiprocess_mode="livemax", registry=r)
        self.batcher_restarts = Counter("d2v_batcher_restarts", "crashes (and restarts) of a model's batching loop",
                                        ["model"], registry=r)

    def render(self) -> bytes:
        """The Prometheus text: this process's registry, or every worker's under --workers."""
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path)
        return generate_latest(merged)
