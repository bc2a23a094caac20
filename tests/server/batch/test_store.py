"""The job's output directory: atomic parts, what is done (and for which version of each input),
settings checks, merging, directories of the earlier format."""

import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from d2v.atomic import temporary_name
from d2v.server.batch.sources import Source
from d2v.server.batch.store import JobMismatch, JobStore, PartWriter, embedding_matrix

SETTINGS = {"model": "m", "modality": "text", "fingerprint": "abc", "pooling": "mean", "normalize": True,
            "dimensions": 3}


def sources(n: int) -> list[Source]:
    return [Source(f"id{i}", f"file:{i}", text=f"doc {i}") for i in range(n)]


def open_store(tmp_path) -> JobStore:
    store = JobStore(tmp_path / "out")
    store.open({**SETTINGS, "input": "docs.txt"})
    return store


def schema(store: JobStore):
    return store.schema(3, SETTINGS)


def writer(store: JobStore, shard: int = 0, n: int = 1, rows: int = 4) -> PartWriter:
    return PartWriter(store, schema(store), shard, n, rows=rows, seconds=3600)


def test_parts_are_committed_every_n_results_with_their_errors(tmp_path):
    store, src = open_store(tmp_path), sources(10)
    w = writer(store)
    for s in src[:3]:
        w.add(s, np.full(3, float(s.id[2:])))
    w.fail(src[3], "empty text")  # the fourth result commits the first part
    assert [f.name for f in store.part_files()] == ["part-00000-of-00001-000000.parquet"]
    assert [f.name for f in store.error_files()] == ["part-00000-of-00001-000000.errors.jsonl"]
    w.add(src[4], np.ones(3))
    assert store.done_ids() == {"id0", "id1", "id2", "id3"}  # the fifth is not committed yet
    assert store.done_ids(retry_failed=True) == {"id0", "id1", "id2"}
    w.close()
    assert store.embedded_ids() == {"id0", "id1", "id2", "id4"} and store.failed_ids() == {"id3"}
    table = pq.read_table(store.part_files()[0])
    assert table.schema.field("embedding").type.list_size == 3
    assert json.loads(table.schema.metadata[b"d2v"])["model"] == "m"
    np.testing.assert_array_equal(embedding_matrix(table)[:, 0], [0, 1, 2])
    assert not list(store.parts.glob(".*"))  # no temporary files left


def dead_temporary(target, pid: int):
    """The temporary name that `d2v.atomic` gives `target` in process `pid` of this host."""
    host = temporary_name(target).name[len(target.name) + 2:].split("-")[0]
    return temporary_name(target, f"{host}-{pid}-ab12")


def test_a_rerun_continues_the_numbering_and_removes_stale_temporaries(tmp_path):
    store = open_store(tmp_path)
    w = writer(store)
    w.add(sources(1)[0], np.zeros(3))
    w.close()
    (store.parts / ".part-00000-of-00001-000001.parquet.123.tmp").write_bytes(b"half a file")  # d2v before format 2
    w2 = writer(store)
    assert w2.seq == 1 and not list(store.parts.glob(".*"))

    dead = subprocess.Popen(["true"])
    dead.wait()  # a process that is gone, as a killed run is
    left = [dead_temporary(t, dead.pid) for t in (store.parts / "part-00000-of-00001-000001.parquet", store.merged)]
    for f in left:
        f.write_bytes(b"half a file")
    alive = temporary_name(store.errors)  # this process's own: a live writer's, left alone
    alive.write_bytes(b"being written")
    open_store(tmp_path)
    assert [f.exists() for f in left] == [False, False] and alive.exists()


def test_other_settings_are_refused(tmp_path):
    store = open_store(tmp_path)
    store.open({**SETTINGS, "input": "elsewhere.txt"})  # where the inputs live may change
    with pytest.raises(JobMismatch, match="dimensions was 3, now 2"):
        store.open({**SETTINGS, "dimensions": 2})


def test_merge_writes_input_order_errors_and_npy_then_removes_parts(tmp_path):
    store, src = open_store(tmp_path), sources(7)
    for shard, picks in ((0, [5, 1, 3]), (1, [6, 0, 2, 4])):
        w = writer(store, shard, 2, rows=2)
        for i in picks:
            (w.fail(src[i], f"bad {i}") if i == 4 else w.add(src[i], np.full(3, i, dtype=np.float32)))
        w.close()
    result = store.merge(src, schema(store), npy=True)
    assert result == {"embedded": 6, "failed": 1}
    table = pq.read_table(store.merged)
    assert table.column("id").to_pylist() == ["id0", "id1", "id2", "id3", "id5", "id6"]
    assert table.schema.names == ["id", "source", "embedding", "fingerprint"]
    np.testing.assert_array_equal(embedding_matrix(table)[:, 0], [0, 1, 2, 3, 5, 6])
    assert [json.loads(x) for x in store.errors.read_text().splitlines()] == [
        {"id": "id4", "source": "file:4", "error": "bad 4"}]
    np.testing.assert_array_equal(np.load(store.out / "embeddings.npy"), embedding_matrix(table))
    index = [json.loads(x) for x in (store.out / "index.jsonl").read_text().splitlines()]
    assert index[4] == {"row": 4, "id": "id5", "source": "file:5"}
    assert not store.parts.exists()
    assert store.merge(src, schema(store)) == result  # merging again changes nothing
    assert pq.read_table(store.merged).equals(table)


def test_a_retried_input_replaces_its_failure(tmp_path):
    store, src = open_store(tmp_path), sources(2)
    w = writer(store)
    w.add(src[0], np.zeros(3))
    w.fail(src[1], "timeout")
    w.close()
    store.merge(src, schema(store))
    store.open({**SETTINGS, "input": "docs.txt"})
    w = writer(store)
    w.add(src[1], np.ones(3))
    w.close()
    store.merge(src, schema(store))
    assert pq.read_table(store.merged).column("id").to_pylist() == ["id0", "id1"]
    assert store.errors.read_text() == ""


def test_merge_refuses_missing_inputs_and_keeps_each_input_once(tmp_path):
    store, src = open_store(tmp_path), sources(3)
    w = writer(store)
    w.add(src[0], np.zeros(3), "text:a")
    w.close()
    with pytest.raises(RuntimeError, match="2 inputs are not done yet"):
        store.merge(src, schema(store))
    w = writer(store)
    w.add(src[0], np.zeros(3), "text:a")  # the same input again (a part merged before, say): kept once
    w.add(src[1], np.zeros(3), "text:b")
    w.add(src[2], np.zeros(3), "text:c")
    w.close()
    store.merge(src, schema(store), fingerprints={"id0": "text:a", "id1": "text:b", "id2": "text:c"})
    assert pq.read_table(store.merged).column("id").to_pylist() == ["id0", "id1", "id2"]


def test_results_of_inputs_that_changed_are_not_current(tmp_path):
    store, src = open_store(tmp_path), sources(3)
    w = writer(store)
    w.add(src[0], np.zeros(3), "text:old")
    w.add(src[1], np.zeros(3), "text:b")
    w.fail(src[2], "empty text", "text:old")
    w.close()
    now = {"id0": "text:new", "id1": "text:b", "id2": "text:new"}
    records = store.records()
    assert records.done(now) == {"id1"} and records.changed(now) == ["id0"]  # a changed failure is just retried
    assert records.done() == {"id0", "id1", "id2"}  # without fingerprints, any result counts
    with pytest.raises(RuntimeError, match="2 inputs are not done yet"):
        store.merge(src, schema(store), fingerprints=now)
    w = writer(store)
    w.add(src[0], np.ones(3), "text:new")
    w.add(src[2], np.ones(3), "text:new")
    w.close()
    store.merge(src, schema(store), fingerprints=now)
    table = pq.read_table(store.merged)
    assert table.column("fingerprint").to_pylist() == ["text:new", "text:b", "text:new"]
    np.testing.assert_array_equal(embedding_matrix(table)[:, 0], [1, 0, 1])  # the new embedding, not the old
    assert store.errors.read_text() == ""


def _format_1(tmp_path) -> JobStore:
    """An output directory as d2v wrote it before format 2: no fingerprints, no format_version."""
    out = tmp_path / "out"
    (out / "parts").mkdir(parents=True)
    (out / "job.json").write_text(json.dumps({"format": "d2v.embed-job", **SETTINGS, "input": "docs.txt"}))
    table = pa.table([pa.array(["id0", "id1"]), pa.array(["file:0", "file:1"]),
                      pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 3)],
                     names=["id", "source", "embedding"])
    pq.write_table(table, out / "parts" / "part-00000-of-00001-000000.parquet")
    (out / "parts" / "part-00000-of-00001-000000.errors.jsonl").write_text(
        json.dumps({"id": "id2", "source": "file:2", "error": "empty text"}) + "\n")
    return JobStore(out)


def test_a_directory_of_the_earlier_format_is_resumed_and_merged(tmp_path):
    store = _format_1(tmp_path)
    store.open({**SETTINGS, "input": "docs.txt"})
    assert json.loads(store.job_file.read_text())["format_version"] == 2
    src = sources(4)
    now = {s.id: f"text:{s.id}" for s in src}
    records = store.records()
    assert records.done(now) == {"id0", "id1", "id2"} and records.changed(now) == []  # no fingerprint: not checked
    w = writer(store)
    w.add(src[3], np.ones(3), now["id3"])
    w.close()
    store.merge(src, schema(store), fingerprints=now)
    table = pq.read_table(store.merged)
    assert table.column("id").to_pylist() == ["id0", "id1", "id3"]
    assert table.column("fingerprint").to_pylist() == [None, None, "text:id3"]
    assert json.loads(store.errors.read_text())["id"] == "id2"


def test_a_directory_of_another_kind_or_a_newer_format_is_refused(tmp_path):
    store = _format_1(tmp_path)
    store.job_file.write_text(json.dumps({"format": "d2v.embed-job", "format_version": 9, **SETTINGS}))
    with pytest.raises(JobMismatch, match="written by a newer d2v .format_version 9"):
        store.open({**SETTINGS, "input": "docs.txt"})
    store.job_file.write_text("{not json")
    with pytest.raises(JobMismatch, match="job.json cannot be read"):
        store.open({**SETTINGS, "input": "docs.txt"})
    store.job_file.write_text(json.dumps({"format": "d2v.checkpoint"}))
    with pytest.raises(JobMismatch, match="is not a d2v embed job"):
        store.open({**SETTINGS, "input": "docs.txt"})


def test_a_merge_of_the_earlier_format_killed_before_removing_its_parts_is_finished(tmp_path):
    """What d2v before format 2 left when killed between committing embeddings.parquet and removing the
    parts: the same rows in both. The next merge keeps each input once."""
    store = _format_1(tmp_path)
    part = store.part_files()[0]
    pq.write_table(pq.read_table(part), store.merged)
    store.errors.write_text(json.dumps({"id": "id2", "source": "file:2", "error": "empty text"}) + "\n")
    store.open({**SETTINGS, "input": "docs.txt"})
    src = sources(3)
    assert store.merge(src, schema(store), fingerprints={s.id: "text:x" for s in src}) == {"embedded": 2, "failed": 1}
    assert pq.read_table(store.merged).column("id").to_pylist() == ["id0", "id1"] and not store.parts.exists()
