"""The output directory of a batch embedding job, written so that a job killed at any moment and run
again embeds every input exactly once:

```
OUT/
  job.json                         the job's settings; a run with other settings is refused
  parts/part-I-of-N-SEQ.parquet    embeddings committed by shard I (atomic: written aside, then renamed)
  parts/part-I-of-N-SEQ.errors.jsonl   that part's failures, committed just before it
  embeddings.parquet               every input's embedding, in input order, once the whole job is done
  errors.jsonl                     every failed input with the reason
  embeddings.npy, index.jsonl      with --npy: the same rows as one float32 array, and its ids
```

An input is done when a committed file holds it; a rerun skips done inputs, whichever shard did them.
Parquet rows are `id` (string), `source` (string) and `embedding` (fixed-size list of float32); the
schema metadata `d2v` holds the model and the embedding settings as JSON, so pandas, DuckDB, pyarrow or a
vector database read the file as it is.
"""

import contextlib
import fcntl
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from d2v.server.batch.sources import Source

__all__ = ["JobMismatch", "JobStore", "PartWriter", "embedding_matrix"]

# settings that change what an embedding is: a job directory holds embeddings of one kind only
SETTINGS = ("model", "modality", "fingerprint", "pooling", "normalize", "dimensions")


class JobMismatch(ValueError):
    """The output directory holds a job with other settings."""


def _commit(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def _tmp(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = _tmp(path)
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    _commit(tmp, path)


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """A table's `embedding` column -> (N, D) float32."""
    dim = table.schema.field("embedding").type.list_size
    flat = table.column("embedding").combine_chunks().flatten()
    return flat.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


class JobStore:
    """One job's output directory."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.parts = self.out / "parts"
        self.merged = self.out / "embeddings.parquet"
        self.errors = self.out / "errors.jsonl"

    # -- settings -----------------------------------------------------------------------------------
    def open(self, settings: dict[str, Any]) -> None:
        """Create the directory, or check that it holds the same job (`JobMismatch` otherwise)."""
        self.parts.mkdir(parents=True, exist_ok=True)
        file = self.out / "job.json"
        if file.is_file():
            old = json.loads(file.read_text())
            changed = [k for k in SETTINGS if old.get(k) != settings.get(k)]
            if changed:
                what = "; ".join(f"{k} was {old.get(k)!r}, now {settings.get(k)!r}" for k in changed)
                raise JobMismatch(f"{self.out} holds embeddings made with other settings ({what}): "
                                  "use another --output, or delete it to start over")
            return
        tmp = _tmp(file)
        tmp.write_text(json.dumps({"format": "d2v.embed-job", **settings}, indent=2) + "\n")
        _commit(tmp, file)

    def schema(self, dim: int, metadata: dict[str, Any]) -> pa.Schema:
        return pa.schema([("id", pa.string()), ("source", pa.string()), ("embedding", pa.list_(pa.float32(), dim))],
                         metadata={"d2v": json.dumps(metadata, sort_keys=True)})

    # -- what is done -------------------------------------------------------------------------------
    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))

    def error_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.errors.jsonl"))

    def embedded_ids(self) -> set[str]:
        files = ([self.merged] if self.merged.is_file() else []) + self.part_files()
        return {x for f in files for x in pq.read_table(f, columns=["id"]).column("id").to_pylist()}

    def failed_ids(self) -> set[str]:
        files = ([self.errors] if self.errors.is_file() else []) + self.error_files()
        return {row["id"] for f in files for row in _read_jsonl(f)}

    def done_ids(self, retry_failed: bool = False) -> set[str]:
        """Inputs that need no work: embedded, and (unless retried) failed."""
        return self.embedded_ids() | (set() if retry_failed else self.failed_ids())

    # -- merge --------------------------------------------------------------------------------------
    def merge(self, sources: Sequence[Source], npy: bool = False) -> dict[str, int]:
        """Every part (and an earlier merge) -> `embeddings.parquet` and `errors.jsonl` in input order;
        the parts are removed after. Raises when an input is missing or embedded twice. Processes that
        merge at once (shards finishing together) take turns on a lock; merging again changes nothing."""
        with open(self.out / ".merge.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the process ends, even if killed
            return self._merge(sources, npy)

    def _merge(self, sources: Sequence[Source], npy: bool) -> dict[str, int]:
        parts, error_parts = self.part_files(), self.error_files()
        tables = [pq.read_table(f) for f in ([self.merged] if self.merged.is_file() else []) + parts]
        table = pa.concat_tables(tables)
        ids = table.column("id").to_pylist()
        twice = [x for x, n in Counter(ids).items() if n > 1]
        if twice:
            raise RuntimeError(f"{self.out}: {len(twice)} inputs were embedded twice (first: {twice[:3]})")
        position = {s.id: k for k, s in enumerate(sources)}
        rows = sorted((position[x], i) for i, x in enumerate(ids) if x in position)
        table = table.take(pa.array([i for _, i in rows], type=pa.int64()))
        embedded = set(table.column("id").to_pylist())

        failures: dict[str, dict[str, Any]] = {}
        for f in ([self.errors] if self.errors.is_file() else []) + error_parts:
            for row in _read_jsonl(f):
                if row["id"] in position and row["id"] not in embedded:
                    failures[row["id"]] = row  # a later record (a retry) replaces an earlier one
        missing = [s.id for s in sources if s.id not in embedded and s.id not in failures]
        if missing:
            raise RuntimeError(f"{self.out}: {len(missing)} inputs are not done yet (first: {missing[:3]})")

        tmp = _tmp(self.merged)
        pq.write_table(table, tmp)
        _commit(tmp, self.merged)
        _write_jsonl(self.errors, sorted(failures.values(), key=lambda r: position[r["id"]]))
        if npy:
            array = embedding_matrix(table)
            tmp = _tmp(self.out / "embeddings.npy")
            with open(tmp, "wb") as f:
                np.save(f, array)
            _commit(tmp, self.out / "embeddings.npy")
            _write_jsonl(self.out / "index.jsonl", ({"row": k, "id": i, "source": s} for k, (i, s) in enumerate(
                zip(table.column("id").to_pylist(), table.column("source").to_pylist(), strict=True))))
        for f in parts + error_parts:
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.parts.rmdir()  # when no other shard writes there
        return {"embedded": len(embedded), "failed": len(failures)}


class PartWriter:
    """Buffers one shard's results and commits them as parts: every `rows` results or `seconds`
    seconds, whichever comes first, and at `close`."""

    def __init__(self, store: JobStore, schema: pa.Schema, shard: int, num_shards: int, rows: int = 4096,
                 seconds: float = 60.0):
        self.store, self.schema = store, schema
        self.prefix = f"part-{shard:05d}-of-{num_shards:05d}-"
        self.rows, self.seconds = rows, seconds
        self.dim = schema.field("embedding").type.list_size
        existing = [int(f.name[len(self.prefix):].split(".")[0]) for f in store.parts.glob(self.prefix + "*")]
        self.seq = max(existing, default=-1) + 1
        for stale in store.parts.glob(f".{self.prefix}*.tmp"):  # left by a killed run of this shard
            stale.unlink(missing_ok=True)
        self._ids: list[str] = []
        self._sources: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._errors: list[dict[str, str]] = []
        self._since = time.monotonic()
        self.committed = 0

    def add(self, source: Source, vector: np.ndarray) -> None:
        self._ids.append(source.id)
        self._sources.append(source.source)
        self._vectors.append(np.asarray(vector, dtype=np.float32).reshape(self.dim))
        self.maybe_flush()

    def fail(self, source: Source, reason: str) -> None:
        self._errors.append({"id": source.id, "source": source.source, "error": reason})
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
            _write_jsonl(self.store.parts / f"{name}.errors.jsonl", self._errors)
        if self._ids:
            flat = pa.array(np.concatenate(self._vectors), type=pa.float32())
            table = pa.table([pa.array(self._ids, pa.string()), pa.array(self._sources, pa.string()),
                              pa.FixedSizeListArray.from_arrays(flat, self.dim)], schema=self.schema)
            final = self.store.parts / f"{name}.parquet"
            tmp = _tmp(final)
            pq.write_table(table, tmp)
            _commit(tmp, final)
        self.committed += self.pending
        self._ids, self._sources, self._vectors, self._errors = [], [], [], []

    close = flush
