"""The serving engine: loads models, decodes requests off the event loop, batches inputs per model
and runs them on a backend. It knows nothing of HTTP (it never imports FastAPI); `app.py` maps its
typed errors to statuses.

One `ModelWorker` per model owns a bounded queue and a batching loop:

- a request's inputs are queued together; when the queue would hold more than `max_queue` inputs the
  request is refused at once (`Overloaded`, 429 with Retry-After), never queued forever; a request
  is admitted (`Engine.admit`) before its inputs are decoded, so inputs waiting for the decode threads
  count too;
- batching is continuous (as in TEI or vLLM): when the model is idle, the loop takes what is queued
  at that moment and runs it at once, so a lone request never waits for company; inputs that arrive
  while the model is busy queue up and form the next batch. `max_wait_ms` (default 0) is an optional
  extra wait: when above 0, an idle model waits up to that long after the oldest queued input for
  others to arrive (or until a batch is full) before it starts;
- what the loop takes is sorted by length and cut into batches under a padded budget (text tokens,
  audio samples or images, each batch x its longest), `max_batch_size`, and `max_padding` (the share
  of a batch that may be padding: on CPU a padded batch of very different lengths costs more than
  running them apart);
- a model runs up to `lanes` batches at once, each in its own inference thread (default: for
  PyTorch on a CPU 3 for audio, 2 for images and text; else 1): whenever a lane is free the loop
  cuts what is queued and starts the oldest batches, one per free lane, splitting a batch in two
  when a lane would stay idle; a batch
  started alone uses every intra-op thread, one started beside others its share (on CPU two half
  batches side by side serve more than one batch on all threads: an operator on one batch's tensors
  does not keep every thread busy);
- a batch that fails is rerun item by item, so a bad input fails only its own request;
- the loop is supervised: if it raises (a bug, not a failed forward pass), every input it held or that
  is queued fails at once (`ModelUnavailable`, 503), the crash is logged, counted and reported by the
  next health check, and the loop starts again.

Health checks (`Engine.health`) send the warm-up batch through each model's queue, like any request,
so a model whose loop no longer answers is unhealthy; their result is cached for `health_cache_s` and
shared by concurrent callers, so polling cannot multiply forward passes.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from d2v.ctc import greedy_decode
from d2v.server.backends.base import Backend, Task, load_backend
from d2v.server.config import ServeConfig
from d2v.server.decode import Decoded, InputDecoder, make_input_decoder
from d2v.server.metrics import PrometheusMetrics
from d2v.tokenizer.spec import BOS_ID, EOS_ID

__all__ = [
    "BadRequest", "Engine", "EngineError", "InferenceError", "ModelUnavailable", "ModelWorker", "NotReady", "Outcome",
    "Overloaded", "Transcripts", "UnknownModel", "finish_embeddings", "parse_model_spec", "top_predictions",
]

log = logging.getLogger("d2v.serve")

AUDIO_BUDGET_CUDA = 16000 * 64
AUDIO_BUDGET_CPU = 16000 * 10
"""The padded audio samples of one forward pass when `max_batch_samples` is 0 (the default): on a GPU
(any device but the CPU) 64 s, on CPU 10 s, where large padded batches of long clips served fewer
clips/s (docs/benchmarks.md, "Continuous batching and a busy machine": 1.50x the clips/s at
concurrency 32 with one core taken)."""

BATCH_FIELDS = ("max_batch_size", "max_batch_tokens", "max_batch_samples", "max_batch_images", "max_wait_ms",
                "max_queue", "max_padding", "lanes")


class EngineError(Exception):
    """Base of the engine's typed errors."""


class UnknownModel(EngineError):
    """No loaded model has that name (404)."""


class BadRequest(EngineError):
    """The request asks for something the model cannot do: cls pooling without a CLS token, more
    dimensions than it has, classification without a head, transcription without a CTC head, an
    ambiguous model (422)."""


class Overloaded(EngineError):
    """The model's queue is full (429)."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(EngineError):
    """Warm-up is not done, or the server is draining (503)."""


class ModelUnavailable(NotReady):
    """The model's batching loop crashed while it held the request; it has been restarted (503)."""


class InferenceError(EngineError):
    """The forward pass failed (500)."""


@dataclass
class Outcome:
    """Per input: its embedding (D,), logits (C,) or CTC emissions (T, V); and the request's time in
    the queue and in the forward passes (the longest over its batches)."""

    values: list[np.ndarray]
    queue_s: float
    inference_s: float


@dataclass
class Transcripts:
    """Per input: its greedy CTC transcript; and the request's time in the queue and the forward passes."""

    texts: list[str]
    queue_s: float
    inference_s: float


@dataclass(eq=False)
class _Item:
    data: Decoded
    task: Task
    future: asyncio.Future
    enqueued: float
    started: float = 0.0
    inference_s: float = 0.0


def parse_model_spec(spec: str) -> tuple[str | None, str, dict[str, float]]:
    """`[NAME=]PATH[,key=value...]` -> (name, path, per-model batching overrides)."""
    head, *opts = spec.split(",")
    name, path = head.split("=", 1) if "=" in head else (None, head)
    overrides: dict[str, float] = {}
    for opt in opts:
        key, _, value = opt.partition("=")
        key = key.strip().replace("-", "_")
        if key not in BATCH_FIELDS or not value:
            raise ValueError(f"--model {spec!r}: per-model options are {', '.join(BATCH_FIELDS)} (key=value)")
        overrides[key] = float(value) if key in ("max_wait_ms", "max_padding") else int(value)
        if overrides[key] < 0:
            raise ValueError(f"--model {spec!r}: {key} must be 0 or more")
    return name, path, overrides


def finish_embeddings(vectors: Sequence[np.ndarray], dimensions: int | None, normalize: bool) -> np.ndarray:
    """Keep the first `dimensions` (Matryoshka), then L2-normalize if asked -> (N, d) float32."""
    x = np.stack(vectors).astype(np.float32, copy=False)
    if dimensions:
        x = x[:, :dimensions]
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def top_predictions(logits: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    """Softmax scores, the top k sorted descending."""
    z = logits.astype(np.float64) - logits.max()
    p = np.exp(z) / np.exp(z).sum()
    order = np.argsort(-p, kind="stable")[: max(1, k)]
    return [{"label": labels[i], "score": float(p[i])} for i in order]


def warmup_inputs(config: dict[str, Any]) -> list[Decoded]:
    """Synthetic inputs of each modality: one batch of two different lengths."""
    pre, rng = config.get("preprocessing") or {}, np.random.default_rng(0)
    if config["modality"] == "image":
        size, c = int(pre["image_size"]), int(pre.get("channels", 3))
        return [Decoded(rng.standard_normal((c, size, size)).astype(np.float32), 1, 1) for _ in range(2)]
    if config["modality"] == "audio":
        rate = int(pre["sample_rate"])
        return [Decoded((0.1 * rng.standard_normal(n)).astype(np.float32), n, 1) for n in (rate, rate // 2)]
    bos, eos = int(pre.get("bos_id", BOS_ID)), int(pre.get("eos_id", EOS_ID))
    vocab = int(config["encoder"]["text"]["vocab_size"])
    rows = [np.array([bos, *rng.integers(4, vocab, n), eos], dtype=np.int64) for n in (12, 5)]
    return [Decoded(r, len(r), len(r)) for r in rows]


class ModelWorker:
    """One model: its backend, decoder, bounded queue and batching loop."""

    def __init__(self, backend: Backend, decoder: InputDecoder, cfg: ServeConfig, metrics: PrometheusMetrics):
        self.backend, self.decoder, self.cfg, self.metrics = backend, decoder, cfg, metrics
        self.name, self.modality = backend.name, backend.modality
        samples = cfg.max_batch_samples or (AUDIO_BUDGET_CPU if backend.device.startswith("cpu") else AUDIO_BUDGET_CUDA)
        self.budget = {"image": cfg.max_batch_images, "audio": samples, "text": cfg.max_batch_tokens}[self.modality]
        if cfg.lanes < 0:
            raise ValueError(f"model {self.name!r}: lanes must be 0 (auto) or more, not {cfg.lanes}")
        self.lanes = cfg.lanes or backend.auto_lanes()
        self.executor = ThreadPoolExecutor(self.lanes, thread_name_prefix=f"d2v-infer-{self.name}")
        self.pending: list[_Item] = []
        self.running: list[list[_Item]] = []  # the batches in the lanes now, not answered yet
        self._lane_tasks: set[asyncio.Task] = set()
        self.queued = 0  # inputs submitted and not yet answered
        self.crash_report: str | None = None  # the last crash, until a health check reports it
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # this model's metric children, looked up once (`labels()` takes a lock and hashes per call)
        m, name = metrics, self.name
        self._m_queue_length, self._m_queue_seconds = m.queue_length.labels(name), m.queue_seconds.labels(name)
        self._m_inference_seconds, self._m_batch_size = m.inference_seconds.labels(name), m.batch_size.labels(name)
        self._m_batch_fill, self._m_batch_budget = m.batch_fill.labels(name), m.batch_budget.labels(name)
        self._m_inputs = m.inputs.labels(name)

    # -- queue --------------------------------------------------------------------------------------
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"d2v-batcher-{self.name}")

    @contextlib.contextmanager
    def admit(self, n: int, check: bool = False) -> Iterator[None]:
        """Hold `n` places in the queue (decoding and waiting for the model), or refuse at once.

        Args:
            n: inputs of the request.
            check: a health check or warm-up: never refused.

        Raises:
            Overloaded: the queue would hold more than `max_queue` inputs.
        """
        if not check and self.queued + n > self.cfg.max_queue:
            self.metrics.overloaded.labels(self.name).inc()
            raise Overloaded(f"model {self.name!r} is overloaded: {self.queued} inputs queued, the limit is "
                             f"{self.cfg.max_queue}; retry later", self.cfg.retry_after_s)
        self.queued += n
        self._m_queue_length.set(self.queued)
        try:
            yield
        finally:
            self.queued -= n
            self._m_queue_length.set(self.queued)

    async def submit(self, inputs: list[Decoded], tasks: list[Task], check: bool = False,
                     admitted: bool = False) -> Outcome:
        """Queue a request's inputs and wait for their answers.

        Args:
            inputs: decoded inputs.
            tasks: what each input asks for.
            check: a health check or warm-up: never refused for a full queue.
            admitted: the caller already holds their places (`admit`).

        Raises:
            Overloaded: the queue would hold more than `max_queue` inputs.
            InferenceError: a forward pass failed.
            ModelUnavailable: the batching loop crashed while it held the request.
        """
        if not admitted:
            with self.admit(len(inputs), check):
                return await self.submit(inputs, tasks, check, admitted=True)
        loop, now = asyncio.get_running_loop(), time.perf_counter()
        items = [_Item(x, t, loop.create_future(), now) for x, t in zip(inputs, tasks, strict=True)]
        self.pending.extend(items)
        self._wakeup.set()
        if len(items) == 1:  # the common case: no gather (a task and a future fewer per request)
            values = [await items[0].future]
        else:
            values = list(await asyncio.gather(*(i.future for i in items)))
        return Outcome(values, max(i.started - i.enqueued for i in items), max(i.inference_s for i in items))

    def _cost(self, items: list[_Item]) -> int:
        return len(items) if self.modality == "image" else len(items) * max(i.data.length for i in items)

    def _batches(self, items: list[_Item]) -> list[list[_Item]]:
        """Sorted by length, cut under the padded budget, the batch size and the padding share (one
        pass, keeping the current batch's real length; a lone input is its own batch)."""
        if len(items) == 1:
            return [items]
        image = self.modality == "image"
        items = sorted(items, key=lambda i: i.data.length)
        batches: list[list[_Item]] = []
        current: list[_Item] = []
        real = 0  # the current batch's summed lengths; sorted, so its longest is the item added last
        for item in items:
            n, length = len(current) + 1, item.data.length
            cost = n if image else n * length
            if current and (n > self.cfg.max_batch_size or cost > self.budget
                            or (not image and 1.0 - (real + length) / cost > self.cfg.max_padding)):
                batches.append(current)
                current, real = [], 0
            current.append(item)
            real += length
        if current:
            batches.append(current)
        return batches

    @staticmethod
    def _spread(batches: list[list[_Item]], lanes: int) -> list[list[_Item]]:
        """Split the largest batches in two (each half keeps its sorted run of lengths) until there is
        one per free lane or every batch holds one input: on CPU two half batches side by side, each on
        its share of the threads, finish sooner than the whole batch on all of them."""
        batches = list(batches)
        while len(batches) < lanes:
            big = max(range(len(batches)), key=lambda k: len(batches[k]))
            if len(batches[big]) < 2:
                break
            b = batches.pop(big)
            batches[big:big] = [b[:len(b) // 2], b[len(b) // 2:]]
        return batches

    async def _supervise(self) -> None:
        """Run the batching loop; if it raises, fail what it held and what is queued, and run it again."""
        while True:
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug must not leave requests waiting forever
                message = (f"the batching loop of model {self.name!r} crashed ({type(e).__name__}: {e}) and was "
                           "restarted; retry the request")
                log.exception("%s", message)
                self.crash_report = message
                self.metrics.batcher_restarts.labels(self.name).inc()
                failed, self.pending = [i for b in self.running for i in b] + self.pending, []
                for i in failed:
                    if not i.future.done():
                        i.future.set_exception(ModelUnavailable(message))

    async def _loop(self) -> None:
        """Continuous batching over `lanes` forward passes at once: whenever a lane is free, cut what is
        queued into batches (after the optional `max_wait_ms`) and start the oldest ones, one per free
        lane; the rest, with what arrives meanwhile, is cut again when a lane frees up."""
        max_wait = self.cfg.max_wait_ms / 1e3
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self.pending or len(self.running) >= self.lanes:
                continue
            deadline = self.pending[0].enqueued + max_wait
            while max_wait > 0 and len(self.pending) < self.cfg.max_batch_size \
                    and self._cost(self.pending) < self.budget:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                self._wakeup.clear()
            free = self.lanes - len(self.running)
            batches = self._spread(self._batches(self.pending), free)
            batches.sort(key=lambda b: min(i.enqueued for i in b))  # first come, first served
            start, rest = batches[:free], batches[free:]
            self.pending = sorted((i for b in rest for i in b), key=lambda i: i.enqueued)
            for batch in start:
                self.running.append(batch)
                task = asyncio.get_running_loop().create_task(self._lane(batch))
                self._lane_tasks.add(task)
                task.add_done_callback(self._lane_tasks.discard)

    async def _lane(self, batch: list[_Item]) -> None:
        """Run one batch in a lane, then free the lane and wake the loop."""
        try:
            # the threads this pass may use: the model's share of the lanes running now (a pass that
            # started alone keeps all of them until it ends)
            threads = self.backend.threads
            await self._run(batch, max(1, threads // len(self.running)) if threads else 0)
        finally:
            self.running = [b for b in self.running if b is not batch]
            self._wakeup.set()

    async def _run(self, batch: list[_Item], threads: int = 0) -> None:
        batch = [i for i in batch if not i.future.done()]  # e.g. a client that went away
        if not batch:
            return
        loop, start = asyncio.get_running_loop(), time.perf_counter()
        for i in batch:
            i.started = start
        try:
            values = await loop.run_in_executor(self.executor, self._forward, [i.data.data for i in batch],
                                                [i.task for i in batch], threads)
        except Exception as e:  # noqa: BLE001 - rerun alone so one bad input fails only its request
            self.metrics.inference_errors.labels(self.name).inc()
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(InferenceError(f"model {self.name!r} failed: {e}"))
                return
            for i in batch:
                await self._run([i], threads)
            return
        elapsed = time.perf_counter() - start
        for i, v in zip(batch, values, strict=True):  # answer first, then the metrics
            i.inference_s = elapsed
            if not i.future.done():
                i.future.set_result(v)
        self._m_inference_seconds.observe(elapsed)
        self._m_batch_size.observe(len(batch))
        cost = self._cost(batch)
        self._m_batch_fill.observe(sum(i.data.length for i in batch) / max(cost, 1))
        self._m_batch_budget.observe(min(cost / max(self.budget, 1), 1.0))
        self._m_inputs.inc(len(batch))
        for i in batch:
            self._m_queue_seconds.observe(start - i.enqueued)

    def _forward(self, items: list[np.ndarray], tasks: list[Task], threads: int) -> list[np.ndarray]:
        """In a lane's thread: one forward pass on `threads` intra-op threads (0: as loaded)."""
        if threads:
            self.backend.use_threads(threads)
        return self.backend.run(items, tasks)

    # -- warm-up, health, shutdown -------------------------------------------------------------------
    async def forward_check(self, timeout: float) -> None:
        """A real forward pass of a padded batch, sent through the queue and the batching loop like a
        request (so a loop that no longer answers fails it); raises on failure or after `timeout`.
        Speech recognizers run what /transcribe runs (the emissions), other models what /embed runs."""
        inputs = warmup_inputs(self.backend.config)
        task = Task("transcribe") if self.backend.vocabulary else Task("embed", self.backend.default_pooling)
        out = (await asyncio.wait_for(self.submit(inputs, [task] * len(inputs), check=True), timeout)).values
        if len(out) != len(inputs) or not all(np.all(np.isfinite(v)) for v in out):
            what = "emissions" if task.kind == "transcribe" else "embeddings"
            raise InferenceError(f"model {self.name!r} returned non-finite {what}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._lane_tasks):
            task.cancel()
        for i in [i for b in self.running for i in b] + self.pending:
            if not i.future.done():
                i.future.set_exception(NotReady("the server is shutting down"))
        self.executor.shutdown(wait=False, cancel_futures=True)


class Engine:
    """Every served model, the decode thread pool, and the metrics.

    Args:
        cfg: the serving configuration; `cfg.models` names the directories to load.
        backends: already-loaded backends (tests, benchmarks); by default they are loaded from `cfg.models`.
        overrides: per-model batching overrides by model name (from `--model NAME=PATH,key=value`).
        decoders: decoders by model name (tests); by default made from each model's config.
    """

    def __init__(self, cfg: ServeConfig, backends: list[Backend] | None = None,
                 overrides: dict[str, dict[str, float]] | None = None, metrics: PrometheusMetrics | None = None,
                 decoders: dict[str, InputDecoder] | None = None):
        self.cfg = cfg
        self.metrics = metrics or PrometheusMetrics()
        self.ready = False
        self.closing = False
        self._health: tuple[float, dict[str, str]] | None = None  # (when, status) of the last check
        self._health_task: asyncio.Task | None = None
        self.decode_pool = ThreadPoolExecutor(max(1, cfg.decode_workers), thread_name_prefix="d2v-decode")
        overrides = dict(overrides or {})
        if backends is None:
            backends = []
            for spec in cfg.models:
                name, path, opts = parse_model_spec(spec)
                b = load_backend(path, name, cfg.backend, cfg.device, cfg.dtype, cfg.threads, cfg.quantize,
                                 cfg.min_cosine, cfg.cache_dir)
                backends.append(b)
                if opts:
                    overrides[b.name] = opts
        self.workers: dict[str, ModelWorker] = {}
        for b in backends:
            if b.name in self.workers:
                raise ValueError(f"two models are named {b.name!r}: name them with --model NAME=PATH")
            decoder = (decoders or {}).get(b.name) or make_input_decoder(
                b.config, b.directory, cfg.max_pixels, cfg.max_audio_seconds, cfg.max_tokens)
            self.workers[b.name] = ModelWorker(b, decoder, replace(cfg, **overrides.get(b.name, {})), self.metrics)
        if not self.workers:
            raise ValueError("no models to serve")

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the batching loops, then warm every model up; `ready` turns true after."""
        for w in self.workers.values():
            w.start()
        if self.cfg.warmup:
            for w in self.workers.values():
                await w.forward_check(max(60.0, self.cfg.health_timeout_s))
        self.ready = True

    async def stop(self, drain_s: float | None = None) -> None:
        """Refuse new requests, let queued ones finish (up to `drain_s`), then stop."""
        self.closing = True
        self.ready = False
        deadline = time.monotonic() + (self.cfg.drain_seconds if drain_s is None else drain_s)
        while any(w.queued for w in self.workers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for w in self.workers.values():
            await w.stop()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    async def health(self) -> dict[str, str]:
        """Each model's state: "ok" after a real forward pass through its queue, else the error.

        A result is reused for `health_cache_s` seconds, and concurrent callers share one check; a
        crash of a batching loop since the last check is reported at once (and then forgotten: the
        next check goes through the restarted loop)."""
        crashed = any(w.crash_report for w in self.workers.values())
        if not crashed and self._health is not None and time.monotonic() - self._health[0] < self.cfg.health_cache_s:
            return self._health[1]
        if self._health_task is None or self._health_task.done():
            self._health_task = asyncio.get_running_loop().create_task(self._check_health(), name="d2v-health")
        return await asyncio.shield(self._health_task)

    async def _check_health(self) -> dict[str, str]:
        status = {}
        for name, w in self.workers.items():
            if w.crash_report:
                status[name], w.crash_report = w.crash_report, None
                continue
            try:
                await w.forward_check(self.cfg.health_timeout_s)
                status[name] = "ok"
            except TimeoutError:
                status[name] = f"no answer within {self.cfg.health_timeout_s:g} s"
            except Exception as e:  # noqa: BLE001 - any failure makes the model unhealthy
                status[name] = f"{type(e).__name__}: {e}"
        self._health = (time.monotonic(), status)
        return status

    # -- requests -----------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        return [w.backend.info() for w in self.workers.values()]

    def render_metrics(self) -> bytes:
        """The Prometheus text, with the kernels' state read now."""
        for w in self.workers.values():
            for op, state in (w.backend.kernels() or {}).items():
                self.metrics.kernel_fallback.labels(w.name, op).set(float(state.startswith("reference (fallback")))
        return self.metrics.render()

    def resolve(self, model: str | None, modality: str | None) -> ModelWorker:
        """The model a request addresses: by name, else its modality's default (the first loaded)."""
        if model is not None:
            if model not in self.workers:
                raise UnknownModel(f"unknown model {model!r}; loaded: {', '.join(self.workers)}")
            w = self.workers[model]
            if modality is not None and modality != w.modality:
                raise BadRequest(f"model {model!r} takes {w.modality}, not {modality}")
            return w
        candidates = [w for w in self.workers.values() if modality in (None, w.modality)]
        if not candidates:
            raise UnknownModel(f"no {modality} model is loaded; loaded: {', '.join(self.workers)}")
        if modality is None and len(candidates) > 1:
            raise BadRequest(f"several models are loaded ({', '.join(self.workers)}): name one with 'model' "
                             "or pick one by 'modality'")
        return candidates[0]

    def resolve_transcriber(self, model: str | None) -> ModelWorker:
        """The speech recognizer a /transcribe request addresses: by name (which must have a CTC head),
        else the first loaded one."""
        if model is not None:
            worker = self.resolve(model, None)
            self.check_transcribe(worker)
            return worker
        for w in self.workers.values():
            if w.backend.vocabulary is not None:
                return w
        raise UnknownModel(f"no speech recognition (CTC) model is loaded; loaded: {', '.join(self.workers)}")

    def check_transcribe(self, worker: ModelWorker) -> None:
        """`BadRequest` naming the model unless it is a speech recognizer (a CTC head)."""
        if worker.backend.vocabulary is None:
            ctc = [w.name for w in self.workers.values() if w.backend.vocabulary is not None]
            loaded = f"; speech recognizers loaded: {', '.join(ctc)}" if ctc else "; none is loaded"
            raise BadRequest(f"model {worker.name!r} is not a speech recognizer (it has no CTC head), so it cannot "
                             f"transcribe{loaded}")

    @staticmethod
    def check_classify(worker: ModelWorker) -> None:
        """`BadRequest` naming the model unless it has a classification head."""
        if worker.backend.vocabulary is not None:
            raise BadRequest(f"model {worker.name!r} is a speech recognizer (a CTC head), not a classifier; use "
                             "/transcribe")
        if not worker.backend.labels:
            raise BadRequest(f"model {worker.name!r} has no classification head; use /embed")

    def _check_open(self) -> None:
        if self.closing:
            raise NotReady("the server is shutting down")
        if not self.ready:
            raise NotReady("the models are still warming up")

    @contextlib.contextmanager
    def admit(self, worker: ModelWorker, n: int) -> Iterator[None]:
        """Admit a request of `n` inputs to `worker`'s queue for its decoding and its forward passes:
        pass `admitted=True` to `embed`/`classify` inside. Raises `NotReady` or `Overloaded` at once."""
        self._check_open()
        with worker.admit(n):
            yield

    async def decode(self, worker: ModelWorker, values: Sequence[str | bytes | list[int]], truncate: bool = True,
                     content_types: Sequence[str | None] | None = None) -> tuple[list[Decoded], float]:
        """Decode a request's inputs (on the event loop when the decoder says they are cheap: short text,
        `InputDecoder.inline_chars`; else in the decode pool); returns them and the seconds it took."""
        self._check_open()
        types = content_types or [None] * len(values)

        def work() -> list[Decoded]:
            return [worker.decoder(v, i, truncate, t) for i, (v, t) in enumerate(zip(values, types, strict=True))]

        start = time.perf_counter()
        if sum(len(v) for v in values) <= getattr(worker.decoder, "inline_chars", 0):
            out = work()  # cheaper than the hop to a decode thread and back
        else:
            out = await asyncio.get_running_loop().run_in_executor(self.decode_pool, work)
        elapsed = time.perf_counter() - start
        self.metrics.decode_seconds.labels(worker.name).observe(elapsed)
        return out, elapsed

    async def embed(self, worker: ModelWorker, inputs: list[Decoded], pooling: str | None = None,
                    dimensions: int | None = None, admitted: bool = False) -> Outcome:
        """Embeddings of decoded inputs; `admitted`: the caller holds their places (`admit`), which
        checked that the server was open (a request admitted before SIGTERM is finished, not refused)."""
        if not admitted:
            self._check_open()
        pooling = self.check_embed(worker, pooling, dimensions)
        return await worker.submit(inputs, [Task("embed", pooling)] * len(inputs), admitted=admitted)

    @staticmethod
    def check_embed(worker: ModelWorker, pooling: str | None, dimensions: int | None) -> str:
        """The pooling an embedding request gets (its own or the model's default), or `BadRequest`."""
        pooling = pooling or worker.backend.default_pooling
        if pooling == "cls" and not worker.backend.has_cls:
            raise BadRequest(f"{worker.modality} models have no CLS token; use pooling 'mean'")
        if dimensions is not None and not 1 <= dimensions <= worker.backend.dim:
            raise BadRequest(f"dimensions must lie in [1, {worker.backend.dim}] for model {worker.name!r}")
        return pooling

    async def classify(self, worker: ModelWorker, inputs: list[Decoded], admitted: bool = False) -> Outcome:
        """Logits of decoded inputs; `admitted` as for `embed`."""
        if not admitted:
            self._check_open()
        self.check_classify(worker)
        return await worker.submit(inputs, [Task("classify")] * len(inputs), admitted=admitted)

    async def transcribe(self, worker: ModelWorker, inputs: list[Decoded], admitted: bool = False) -> Transcripts:
        """Greedy CTC transcripts of decoded audio: one forward pass per batch (queued and batched with
        every other request to the model), each input's emissions decoded over its own real frames;
        `admitted` as for `embed`."""
        if not admitted:
            self._check_open()
        self.check_transcribe(worker)
        outcome = await worker.submit(inputs, [Task("transcribe")] * len(inputs), admitted=admitted)
        vocab = worker.backend.vocabulary
        texts = [greedy_decode(e[None], vocab)[0] for e in outcome.values]
        return Transcripts(texts, outcome.queue_s, outcome.inference_s)
