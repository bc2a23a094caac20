"""`d2v embed`: a batch embedding job over a directory, a JSONL manifest or a text file; with
`task="transcribe"` (`d2v embed --task transcribe`) a transcription job of a speech recognizer's
audio files instead, with the same machinery (transcripts.parquet: id, source, text, fingerprint).

It runs the server's own `Engine` (the same backends, decoders and dynamic batcher as `d2v serve`),
fed from a window of inputs in flight: files are read and decoded in the engine's decode threads while
the batcher sorts what is queued by length and runs it, so the model is not left waiting. Results go
to a `JobStore` in parts committed atomically, each result with the fingerprint of its input; a rerun
skips what is committed for the inputs as they are now, retries failures of inputs that changed, and
refuses to go on over embeddings of inputs that changed (unless `redo_changed`). With `--shard I/N`
(or under torchrun, from RANK/WORLD_SIZE) a process takes the inputs whose id hashes to its shard;
whichever shard finds the whole job done merges the parts into `embeddings.parquet`. An output that
cannot be written stops the job (`OutputError`) with what is committed kept.
"""

import asyncio
import contextlib
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from d2v import __version__
from d2v.configuration import values_from_args
from d2v.server.batch.inputs import file_fingerprint, input_fingerprint, read_file
from d2v.server.batch.settings import ENGINE_FIELDS, MAX_FILE_BYTES
from d2v.server.batch.sources import Source, list_sources, parse_shard, shard_of
from d2v.server.batch.store import JobMismatch, JobStore, OutputError, PartWriter
from d2v.server.config import ServeConfig
from d2v.server.decode import Decoded, InputError
from d2v.server.engine import Engine, InferenceError, ModelWorker, finish_embeddings

Task = Literal["embed", "transcribe"]

__all__ = ["ENGINE_FIELDS", "EmbedJob", "EmbedSummary", "model_fingerprint", "run_embed_job"]

@dataclass
class EmbedJob:
    """One job: what to embed, where to, how; `engine` holds the ServeConfig fields of ENGINE_FIELDS."""

    model: str
    input: str
    output: str
    task: Task = "embed"
    """"embed", or "transcribe" (speech recognizers: greedy CTC transcripts instead of embeddings)"""
    pooling: Literal["mean", "cls"] | None = None
    normalize: bool = True
    dimensions: int | None = None
    truncate: bool = True
    shard: str | None = None
    retry_failed: bool = False
    redo_changed: bool = False
    """embed again the inputs that changed since they were embedded (else the job refuses to go on)"""
    max_file_bytes: int = MAX_FILE_BYTES
    """larger files fail (as do FIFOs, devices and directories: only regular files are read)"""
    npy: bool = False
    part_rows: int = 4096
    part_seconds: float = 60.0
    in_flight: int = 0
    """inputs read, decoded or queued at once (0: four batches' worth)"""
    progress: bool = True
    engine: dict[str, Any] = field(default_factory=dict)


@dataclass
class EmbedSummary:
    inputs: int
    """in the whole job (every shard)"""
    shard_inputs: int
    skipped: int
    """already done by an earlier run"""
    embedded: int
    failed: int
    seconds: float
    """embedding this run's inputs (after the model is loaded)"""
    merged: bool
    output: str
    task: Task = "embed"

    @property
    def items_per_s(self) -> float:
        return (self.embedded + self.failed) / max(self.seconds, 1e-9)

    def line(self) -> str:
        verb, merged = ("transcribed", "transcripts") if self.task == "transcribe" else ("embedded", "embeddings")
        return (f"{self.embedded + self.failed} of {self.shard_inputs} inputs done in {self.seconds:.1f} s "
                f"({self.items_per_s:.1f}/s): {verb} {self.embedded}, failed {self.failed}, skipped "
                f"{self.skipped} (done before)" + (f"; merged into {self.output}/{merged}.parquet"
                                                    if self.merged else ""))


def model_fingerprint(directory: Path) -> str:
    """A cheap identity of a model directory: every file's name, size, first and last MiB."""
    h = hashlib.sha256()
    for f in sorted(p for p in directory.iterdir() if p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]


def _pick_local_gpu(cfg: ServeConfig) -> None:
    """Under torchrun on a CUDA machine, each process uses its own GPU (LOCAL_RANK)."""
    if "LOCAL_RANK" not in os.environ or cfg.device == "cpu" or cfg.backend == "onnx":
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())


def _size(src: Source) -> int:
    """An input's length, roughly: characters of text, token ids, bytes of a file."""
    if src.text is not None:
        return len(src.text)
    if src.tokens is not None:
        return 4 * len(src.tokens)  # about four characters a token
    try:
        return src.path.stat().st_size if src.path is not None else 0
    except OSError:
        return 0


def _load(worker: ModelWorker, src: Source, truncate: bool, max_file_bytes: int, fingerprint: str
          ) -> tuple[Decoded, str]:
    """Read and decode one input (in a decode thread); with the fingerprint of what was read."""
    if src.error is not None:
        raise InputError(None, src.error)
    value: str | bytes | list[int]
    if src.tokens is not None:
        if worker.modality != "text":
            raise InputError(None, f"{worker.modality} models take files ('path'), not 'tokens'")
        value = list(src.tokens)
    elif src.text is not None:
        if worker.modality != "text":
            raise InputError(None, f"{worker.modality} models take files ('path'), not 'text'")
        value = src.text
    else:
        value, st = read_file(src.path, max_file_bytes)
        fingerprint = file_fingerprint(st)
        if not value:
            raise InputError(None, "empty file")
    return worker.decoder(value, None, truncate), fingerprint


async def _embed(engine: Engine, worker: ModelWorker, todo: list[Source], fingerprints: dict[str, str],
                 writer: PartWriter, job: EmbedJob, pooling: str, window: int, progress: Any) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(window)
    running: set[asyncio.Task] = set()
    counts = {"embedded": 0, "failed": 0}
    stopped: list[OutputError] = []  # a commit failed: feed no more, finish what is in flight

    async def one(src: Source) -> None:
        fingerprint = fingerprints[src.id]
        try:
            try:
                decoded, fingerprint = await loop.run_in_executor(engine.decode_pool, _load, worker, src, job.truncate,
                                                                  job.max_file_bytes, fingerprint)
                if job.task == "transcribe":
                    result: Any = (await engine.transcribe(worker, [decoded])).texts[0]
                else:
                    out = await engine.embed(worker, [decoded], pooling)
                    result = finish_embeddings(out.values, job.dimensions, job.normalize)[0]
            except (InputError, InferenceError) as e:
                counts["failed"] += 1
                progress.set_postfix(failed=counts["failed"], refresh=False)
                writer.fail(src, str(e), fingerprint)
            else:
                counts["embedded"] += 1
                writer.add(src, result, fingerprint)
        except OutputError as e:
            stopped.append(e)
        finally:
            slots.release()
            progress.update(1)

    for src in todo:
        await slots.acquire()
        if stopped:
            break
        task = loop.create_task(one(src))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running)
    if stopped:
        raise stopped[0]
    return counts["embedded"], counts["failed"]


def _changed_error(out: str, changed: list[str], task: Task) -> JobMismatch:
    first = ", ".join(repr(x) for x in changed[:3])
    done, redo = ("transcribed", "transcribe") if task == "transcribe" else ("embedded", "embed")
    return JobMismatch(f"{out}: {len(changed)} inputs changed since they were {done} (first: {first}): run with "
                       f"--redo-changed to {redo} them again, or use another --output")


def _settings(job: EmbedJob, engine: Engine, worker: ModelWorker) -> tuple[dict[str, Any], str]:
    """What the job's results depend on (job.json; a rerun with others is refused), and the pooling
    of an embedding job. Raises `BadRequest` for what the model cannot do, `ValueError` for options
    that do not apply to the task."""
    settings = {"model": worker.name, "modality": worker.modality,
                "fingerprint": model_fingerprint(worker.backend.directory)}
    if job.task == "transcribe":
        given = [flag for flag, on in (("--pooling", job.pooling), ("--dimensions", job.dimensions), ("--npy", job.npy),
                                       ("--no-normalize", not job.normalize)) if on]
        if given:
            raise ValueError(f"{', '.join(given)}: embedding options; a transcription job writes text")
        engine.check_transcribe(worker)
        return {"task": "transcribe", **settings, "pooling": None, "normalize": None, "dimensions": None}, ""
    if job.task != "embed":
        raise ValueError(f"task must be 'embed' or 'transcribe', not {job.task!r}")
    pooling = Engine.check_embed(worker, job.pooling, job.dimensions)
    return {**settings, "pooling": pooling, "normalize": job.normalize,
            "dimensions": job.dimensions or worker.backend.dim}, pooling


def run_embed_job(job: EmbedJob) -> EmbedSummary:
    """Run (or resume) one shard of a job; merge when the whole job is done."""
    from tqdm import tqdm

    shard, num_shards = parse_shard(job.shard)
    unknown = set(job.engine) - set(ENGINE_FIELDS)
    if unknown:
        raise ValueError(f"not engine settings: {sorted(unknown)}")
    if job.max_file_bytes < 1:
        raise ValueError(f"--max-file-bytes must be at least 1, not {job.max_file_bytes}")
    cfg = ServeConfig(models=[job.model], warmup=False, **job.engine)
    _pick_local_gpu(cfg)
    window = job.in_flight or 4 * cfg.max_batch_size
    cfg.max_queue = window
    engine = Engine(cfg)
    worker = next(iter(engine.workers.values()))
    settings, pooling = _settings(job, engine, worker)

    sources = list_sources(job.input, worker.modality)
    store = JobStore(job.output, job.task)
    store.open({**settings, "input": str(job.input), "d2v_version": __version__})
    schema = store.schema(settings["dimensions"], {**settings, "backend": worker.backend.backend})
    mine = [s for s in sources if shard_of(s.id, num_shards) == shard]
    fingerprints = {s.id: input_fingerprint(s) for s in mine}
    records = store.records()
    changed = records.changed(fingerprints)
    if changed and not job.redo_changed:
        raise _changed_error(job.output, changed, job.task)
    done = records.done(fingerprints, job.retry_failed)
    todo = [s for s in mine if s.id not in done]
    if worker.modality != "image":  # similar lengths in flight together: full batches, little padding
        todo.sort(key=_size)

    writer = PartWriter(store, schema, shard, num_shards, job.part_rows, job.part_seconds)
    desc = f"{job.task} {worker.name}" + (f" [shard {shard}/{num_shards}]" if num_shards > 1 else "")
    progress = tqdm(total=len(todo), desc=desc, unit="input", dynamic_ncols=True, disable=not job.progress,
                    file=sys.stderr)

    async def main() -> tuple[int, int]:
        await engine.start()
        try:
            return await _embed(engine, worker, todo, fingerprints, writer, job, pooling, window, progress)
        finally:
            await engine.stop(drain_s=0)

    start = time.perf_counter()
    try:
        embedded, failed = asyncio.run(main()) if todo else (0, 0)
    except BaseException:
        with contextlib.suppress(OutputError):
            writer.close()  # commit what finished, also on Ctrl-C or an unexpected error
        raise
    finally:
        progress.close()
    writer.close()
    seconds = time.perf_counter() - start
    everyone = {s.id: input_fingerprint(s) for s in sources}  # as they are now, after this run
    merged = False
    if not everyone.keys() - store.done_ids(fingerprints=everyone):
        store.merge(sources, schema, job.npy, everyone)
        merged = True
    return EmbedSummary(len(sources), len(mine), len(mine) - len(todo), embedded, failed, seconds, merged,
                        str(job.output), job.task)


def job_from_args(args: Any) -> EmbedJob:
    own = {f.name for f in fields(EmbedJob)} - {"engine"}
    return EmbedJob(**{k: getattr(args, k) for k in own}, engine=values_from_args(ServeConfig, args, only=ENGINE_FIELDS))
