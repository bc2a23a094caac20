"""The output directory of a batch embedding job, written so that a job killed at any moment and run
again embeds every input exactly once:

```
OUT/
  job.json                         the job's settings; a run with other settings is refused
  parts/part-I-of-N-SEQ.parquet    results committed by shard I (atomic: written aside, then renamed)
  parts/part-I-of-N-SEQ.errors.jsonl   that part's failures, committed just before it
  embeddings.parquet               every input's embedding, in input order, once the whole job is done
                                   (transcripts.parquet for a transcription job)
  errors.jsonl                     every failed input with the reason
  embeddings.npy, index.jsonl      with --npy: the same rows as one float32 array, and its ids
```

An input is done when a committed file holds a result for it (embedded, or failed) whose fingerprint
(`d2v.server.batch.inputs`) is the input's current one; a rerun skips done inputs, whichever shard
did them. Parquet rows are `id` (string), `source` (string), `embedding` (fixed-size list of float32)
or, in a transcription job (`task` "transcribe"), `text` (string), and `fingerprint` (string); the
schema metadata `d2v` holds the model and the settings as JSON, so pandas, DuckDB, pyarrow or a
vector database read the file as it is. Every file is committed
with `d2v.atomic`; temporaries of killed runs are removed when a job opens the directory.

Format versions (`format_version` in job.json): 1 (no fingerprints; its results count as current and
are never redone as changed) and 2. A directory of version 1 is used as it is and marked 2.
"""

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from d2v.atomic import atomic_file, atomic_write, clean_stale, temporary_name
from d2v.server.batch.sources import Source

__all__ = ["FORMAT_VERSION", "JobMismatch", "JobStore", "MergeError", "OutputError", "PartWriter", "Records",
           "embedding_matrix"]

# settings that change what a result is: a job directory holds results of one kind only ("task" is
# absent from embedding jobs, as in the directories of d2v versions before transcription jobs)
SETTINGS = ("task", "model", "modality", "fingerprint", "pooling", "normalize", "dimensions")
TASKS = ("embed", "transcribe")
RESULT_FILES = {"embed": "embeddings.parquet", "transcribe": "transcripts.parquet"}
FORMAT = "d2v.embed-job"
FORMAT_VERSION = 2

_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_UNUSABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST)


class JobMismatch(ValueError):
    """The output directory holds another job (other settings, other inputs under the same ids)."""


class MergeError(RuntimeError):
    """The parts cannot be merged (an input is not done, a committed file cannot be read)."""


class OutputError(Exception):
    """The output directory cannot be used or written: one line naming the path and why.

    `usage` is true when the fix is another --output (a file, read-only, no permission), false when
    the same command can go on later (a full disk)."""

    def __init__(self, message: str, usage: bool = False):
        super().__init__(message)
        self.usage = usage


def output_error(path: Path, e: OSError) -> OutputError:
    """An OSError while writing `path` -> OutputError with what to do about it."""
    why = os.strerror(e.errno) if e.errno else str(e)  # not pyarrow's "Error writing bytes to file. Detail: ..."
    if e.errno in _NO_SPACE:
        return OutputError(f"cannot write to {path}: {why}; what is committed is kept: run the same command again "
                           "when there is space")
    if e.errno in _UNUSABLE:
        return OutputError(f"cannot write to {path}: {why}; use an --output that you can write to", usage=True)
    return OutputError(f"cannot write to {path}: {why}; what is committed is kept: run the same command again")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError of the block into an `OutputError` naming `path`."""
    try:
        yield
    except OSError as e:
        raise output_error(path, e) from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise MergeError(f"{path}:{number} is not JSON ({e}); was the file edited?") from None
    return rows


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with writing(path), atomic_file(path, "w") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_parquet(path: Path, table: pa.Table) -> None:
    with writing(path), atomic_file(path, "wb") as f:
        pq.write_table(table, f)


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A committed Parquet file, or the columns of `columns` that it has."""
    try:
        if columns is not None:
            names = pq.read_schema(path).names
            columns = [c for c in columns if c in names]
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        hint = ("remove it and run again to embed its inputs again" if path.parent.name == "parts"
                else "restore it, or use another --output")
        raise MergeError(f"{path} cannot be read ({e}): {hint}") from None


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """A table's `embedding` column -> (N, D) float32."""
    dim = table.schema.field("embedding").type.list_size
    flat = table.column("embedding").combine_chunks().flatten()
    return flat.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def error_row(source: Source, reason: str, fingerprint: str | None) -> dict[str, str]:
    row = {"id": source.id, "source": source.source, "error": reason}
    if fingerprint is not None:
        row["fingerprint"] = fingerprint
    return row


def _is_current(fingerprints_seen: set[str | None], now: str | None) -> bool:
    """A result is current when it has no fingerprint (format 1) or the input's present one."""
    return None in fingerprints_seen or now in fingerprints_seen


@dataclass
class Records:
    """What the directory holds per input id: the fingerprints of its embeddings and of its failures
    (None: written by a d2v that did not record them)."""

    embedded: dict[str, set[str | None]] = field(default_factory=dict)
    failed: dict[str, set[str | None]] = field(default_factory=dict)

    def done(self, fingerprints: Mapping[str, str] | None = None, retry_failed: bool = False) -> set[str]:
        """Ids that need no work: with a current embedding, or (unless retried) a current failure;
        without `fingerprints`, any result counts."""
        def current(kind: dict[str, set[str | None]]) -> set[str]:
            if fingerprints is None:
                return set(kind)
            return {x for x, seen in kind.items() if x in fingerprints and _is_current(seen, fingerprints[x])}

        return current(self.embedded) | (set() if retry_failed else current(self.failed))

    def changed(self, fingerprints: Mapping[str, str]) -> list[str]:
        """Ids of `fingerprints` (in its order) embedded from an input that has changed since."""
        return [x for x, now in fingerprints.items() if x in self.embedded and not _is_current(self.embedded[x], now)]


class JobStore:
    """One job's output directory; `task` "embed" (embeddings) or "transcribe" (transcripts)."""

    def __init__(self, out: str | Path, task: str = "embed"):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        self.out = Path(out)
        self.task = task
        self.parts = self.out / "parts"
        self.merged = self.out / RESULT_FILES[task]
        self.errors = self.out / "errors.jsonl"
        self.npy = self.out / "embeddings.npy"
        self.index = self.out / "index.jsonl"
        self.job_file = self.out / "job.json"

    # -- opening ------------------------------------------------------------------------------------
    def open(self, settings: dict[str, Any]) -> None:
        """Create the directory, or check that it holds the same job (`JobMismatch` otherwise); check
        that it can be written (`OutputError`) and remove what killed runs left behind."""
        for p in (self.out, *self.out.parents):
            if p.exists() or p.is_symlink():
                if not p.is_dir():
                    raise OutputError(f"--output {self.out}: {p} is a file, not a directory", usage=True)
                break
        with writing(self.out):
            self.parts.mkdir(parents=True, exist_ok=True)
            probe = temporary_name(self.parts / "write-probe")  # read-only, or not ours: say so now
            probe.touch()
            probe.unlink()
            clean_stale(self.out)
            clean_stale(self.parts)
        if self.job_file.is_file():
            old = self._read_job_file()
            changed = [k for k in SETTINGS if old.get(k) != settings.get(k)]
            if changed:
                what = "; ".join(f"{k} was {old.get(k)!r}, now {settings.get(k)!r}" for k in changed)
                held = "transcripts" if old.get("task") == "transcribe" else "embeddings"
                raise JobMismatch(f"{self.out} holds {held} made with other settings ({what}): "
                                  "use another --output, or delete it to start over")
            if old.get("format_version", 1) == FORMAT_VERSION:
                return
        with writing(self.job_file):  # a new job, or one of format 1 from now on written as 2
            atomic_write(self.job_file, json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                                                    **settings}, indent=2) + "\n")

    def _read_job_file(self) -> dict[str, Any]:
        try:
            old = json.loads(self.job_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise JobMismatch(f"{self.job_file} cannot be read ({e}): use another --output") from None
        if not isinstance(old, dict) or old.get("format") != FORMAT:
            raise JobMismatch(f"{self.job_file} is not a d2v embed job: use another --output")
        version = old.get("format_version", 1)
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise JobMismatch(f"{self.out} was written by a newer d2v (format_version {version!r}; this one reads "
                              f"1 to {FORMAT_VERSION}): run that version, or use another --output")
        return old

    def schema(self, dim: int | None, metadata: dict[str, Any]) -> pa.Schema:
        """The results' Parquet schema: an `embedding` of `dim` float32, or (transcription) a `text`."""
        value = ("text", pa.string()) if self.task == "transcribe" else ("embedding", pa.list_(pa.float32(), dim))
        return pa.schema([("id", pa.string()), ("source", pa.string()), value, ("fingerprint", pa.string())],
                         metadata={"d2v": json.dumps(metadata, sort_keys=True)})

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The merge lock: processes that merge at once (shards finishing together) take turns."""
        try:
            f = open(self.out / ".merge.lock", "a")  # noqa: SIM115 - held for the block
        except OSError as e:
            raise output_error(self.out, e) from None
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the process ends, even if killed
            yield

    # -- what is done -------------------------------------------------------------------------------
    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))

    def error_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.errors.jsonl"))

    def embedding_files(self) -> list[Path]:
        """The merged file (first) and the parts: every committed result (embedding or transcript)."""
        return ([self.merged] if self.merged.is_file() else []) + self.part_files()

    def failure_files(self) -> list[Path]:
        """errors.jsonl (first) and the parts' errors: every committed failure, the later ones last."""
        return ([self.errors] if self.errors.is_file() else []) + self.error_files()

    def records(self) -> Records:
        records = Records()
        for f in self.embedding_files():
            table = read_table(f, ["id", "fingerprint"])
            fps = (table.column("fingerprint").to_pylist() if "fingerprint" in table.column_names
                   else [None] * table.num_rows)
            for x, fp in zip(table.column("id").to_pylist(), fps, strict=True):
                records.embedded.setdefault(x, set()).add(fp)
        for f in self.failure_files():
            for row in read_jsonl(f):
                records.failed.setdefault(row["id"], set()).add(row.get("fingerprint"))
        return records

    def embedded_ids(self) -> set[str]:
        return set(self.records().embedded)

    def failed_ids(self) -> set[str]:
        return set(self.records().failed)

    def done_ids(self, retry_failed: bool = False, fingerprints: Mapping[str, str] | None = None) -> set[str]:
        """Inputs that need no work: embedded, and (unless retried) failed; with `fingerprints`, only
        results of the inputs as they are now."""
        return self.records().done(fingerprints, retry_failed)

    # -- merge --------------------------------------------------------------------------------------
    def merge(self, sources: list[Source], schema: pa.Schema, npy: bool = False,
              fingerprints: Mapping[str, str] | None = None) -> dict[str, int]:
        """Every part (and an earlier merge) -> `embeddings.parquet` and `errors.jsonl` in input order
        (see `d2v.server.batch.merge`)."""
        from d2v.server.batch.merge import merge

        return merge(self, sources, schema, npy, fingerprints)


class PartWriter:
    """Buffers one shard's results and commits them as parts: every `rows` results or `seconds`
    seconds, whichever comes first, and at `close`. A commit that fails (`OutputError`) keeps the
    results buffered, and the next one tries them again."""

    def __init__(self, store: JobStore, schema: pa.Schema, shard: int, num_shards: int, rows: int = 4096,
                 seconds: float = 60.0):
        self.store, self.schema = store, schema
        self.prefix = f"part-{shard:05d}-of-{num_shards:05d}-"
        self.rows, self.seconds = rows, seconds
        self.transcripts = "text" in schema.names
        self.dim = None if self.transcripts else schema.field("embedding").type.list_size
        existing = [int(f.name[len(self.prefix):].split(".")[0]) for f in store.parts.glob(self.prefix + "*")]
        self.seq = max(existing, default=-1) + 1
        for stale in store.parts.glob(f".{self.prefix}*.tmp"):  # left by a killed run of d2v before format 2
            stale.unlink(missing_ok=True)
        self._ids: list[str] = []
        self._sources: list[str] = []
        self._vectors: list[np.ndarray | str] = []
        self._fingerprints: list[str | None] = []
        self._errors: list[dict[str, str]] = []
        self._since = time.monotonic()
        self.committed = 0

    def add(self, source: Source, value: np.ndarray | str, fingerprint: str | None = None) -> None:
        """The embedding (or transcript) of `source` as its `fingerprint` says it was (None: unknown,
        never redone)."""
        self._ids.append(source.id)
        self._sources.append(source.source)
        self._vectors.append(str(value) if self.transcripts else np.asarray(value, dtype=np.float32).reshape(self.dim))
        self._fingerprints.append(fingerprint)
        self.maybe_flush()

    def fail(self, source: Source, reason: str, fingerprint: str | None = None) -> None:
        self._errors.append(error_row(source, reason, fingerprint))
        self.maybe_flush()

    @property
    def pending(self) -> int:
        return len(self._ids) + len(self._errors)

    def maybe_flush(self) -> None:
        if self.pending >= self.rows or (self.pending and time.monotonic() - self._since >= self.seconds):
            self.flush()

    def flush(self) -> None:
        """Commit what is buffered: the errors first, then the embeddings."""
        self._since = time.monotonic()
        if not self.pending:
            return
        name = f"{self.prefix}{self.seq:06d}"
        self.seq += 1
        if self._errors:
            write_jsonl(self.store.parts / f"{name}.errors.jsonl", self._errors)
            self.committed += len(self._errors)
            self._errors = []
        if self._ids:
            if self.transcripts:
                values = pa.array(self._vectors, pa.string())
            else:
                values = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(self._vectors), type=pa.float32()),
                                                           self.dim)
            table = pa.table([pa.array(self._ids, pa.string()), pa.array(self._sources, pa.string()), values,
                              pa.array(self._fingerprints, pa.string())], schema=self.schema)
            write_parquet(self.store.parts / f"{name}.parquet", table)
            self.committed += len(self._ids)
            self._ids, self._sources, self._vectors, self._fingerprints = [], [], [], []

    close = flush
