"""The last step of a batch job: every part, and an earlier merge, into `embeddings.parquet` (a
transcription job's `transcripts.parquet`) and `errors.jsonl` in input order, then the parts removed.

The merge can be killed at any point and run again, because it never trusts that it ran before: it
reads everything committed (the merged file first, then the parts), keeps per input one result that
is current (its fingerprint is the input's present one, or it has none), drops the rest (a part
merged by a run killed before it removed the parts, an embedding of an input that has changed since,
an input no longer in the job), and only then rewrites the outputs, each atomically, and removes the
parts last. So whatever step a kill interrupts (see `faults`), the files are either the old or the
new ones, the parts are still there when anything needs them, and the next merge gives the same
result. Processes that merge at once take turns on the store's lock.
"""

import contextlib
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from d2v.atomic import atomic_file
from d2v.server.batch.faults import reached
from d2v.server.batch.sources import Source
from d2v.server.batch.store import (
    JobStore,
    MergeError,
    embedding_matrix,
    read_jsonl,
    read_table,
    write_jsonl,
    write_parquet,
    writing,
)

__all__ = ["conform", "merge"]


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A committed table in `schema`: a missing `fingerprint` column (format 1) becomes nulls."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.table(columns, schema=schema)


def _pick(ids: list[str], fps: list[str | None], position: Mapping[str, int],
          fingerprints: Mapping[str, str] | None) -> list[int]:
    """The rows to keep, in input order: per input, the first row with its present fingerprint, else
    the first without one; rows of other fingerprints or of ids no longer in the job are left out."""
    best: dict[str, tuple[int, int]] = {}
    for i, (x, fp) in enumerate(zip(ids, fps, strict=True)):
        if x not in position:
            continue
        if fingerprints is None or fp is None:
            rank = 1
        elif fp == fingerprints.get(x):
            rank = 0
        else:
            continue  # made from the input as it was before it changed
        if x not in best or rank < best[x][0]:
            best[x] = (rank, i)
    return sorted((i for _, i in best.values()), key=lambda i: position[ids[i]])


def merge(store: JobStore, sources: list[Source], schema: pa.Schema, npy: bool = False,
          fingerprints: Mapping[str, str] | None = None) -> dict[str, int]:
    """Merge under the store's lock; raises `MergeError` when an input is not done. With `npy` (or
    when an earlier run wrote one) also `embeddings.npy` and `index.jsonl`."""
    with store.lock():
        return _merge(store, sources, schema, npy or store.npy.is_file(), fingerprints)


def _merge(store: JobStore, sources: list[Source], schema: pa.Schema, npy: bool,
           fingerprints: Mapping[str, str] | None) -> dict[str, int]:
    parts, error_parts = store.part_files(), store.error_files()
    tables = [conform(read_table(f), schema) for f in store.embedding_files()]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    position = {s.id: k for k, s in enumerate(sources)}
    ids = table.column("id").to_pylist()
    rows = _pick(ids, table.column("fingerprint").to_pylist(), position, fingerprints)
    table = table.take(pa.array(rows, type=pa.int64())).replace_schema_metadata(schema.metadata)
    embedded = {ids[i] for i in rows}

    failures: dict[str, dict] = {}
    for f in store.failure_files():
        for row in read_jsonl(f):
            x, fp = row["id"], row.get("fingerprint")
            if x in position and x not in embedded and (fingerprints is None or fp is None
                                                         or fp == fingerprints.get(x)):
                failures[x] = row  # a later record (a retry) replaces an earlier one
    missing = [s.id for s in sources if s.id not in embedded and s.id not in failures]
    if missing:
        raise MergeError(f"{store.out}: {len(missing)} inputs are not done yet (first: {missing[:3]})")

    write_jsonl(store.errors, sorted(failures.values(), key=lambda r: position[r["id"]]))
    reached("merge:errors.jsonl")
    write_parquet(store.merged, table)
    reached("merge:embeddings.parquet")
    if npy:
        with writing(store.npy), atomic_file(store.npy, "wb") as f:
            np.save(f, embedding_matrix(table))
        reached("merge:embeddings.npy")
        write_jsonl(store.index, ({"row": k, "id": i, "source": s} for k, (i, s) in enumerate(
            zip(table.column("id").to_pylist(), table.column("source").to_pylist(), strict=True))))
        reached("merge:index.jsonl")
    for k, f in enumerate(parts + error_parts, start=1):  # last: until now a kill leaves them for the rerun
        f.unlink(missing_ok=True)
        if k == 1:
            reached("merge:removed-1")
    reached("merge:removed-all")
    with contextlib.suppress(OSError):
        store.parts.rmdir()  # when no other shard writes there
    return {"embedded": len(embedded), "failed": len(failures)}
