"""The job's output directory: atomic parts, what is done, settings checks, merging."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

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


def writer(store: JobStore, shard: int = 0, n: int = 1, rows: int = 4) -> PartWriter:
    return PartWriter(store, store.schema(3, SETTINGS), shard, n, rows=rows, seconds=3600)


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


def test_a_rerun_continues_the_numbering_and_removes_stale_temporaries(tmp_path):
    store = open_store(tmp_path)
    w = writer(store)
    w.add(sources(1)[0], np.zeros(3))
    w.close()
    (store.parts / ".part-00000-of-00001-000001.parquet.123.tmp").write_bytes(b"half a file")
    w2 = writer(store)
    assert w2.seq == 1 and not list(store.parts.glob(".*"))


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
    result = store.merge(src, npy=True)
    assert result == {"embedded": 6, "failed": 1}
    table = pq.read_table(store.merged)
    assert table.column("id").to_pylist() == ["id0", "id1", "id2", "id3", "id5", "id6"]
    np.testing.assert_array_equal(embedding_matrix(table)[:, 0], [0, 1, 2, 3, 5, 6])
    assert [json.loads(x) for x in store.errors.read_text().splitlines()] == [
        {"id": "id4", "source": "file:4", "error": "bad 4"}]
    np.testing.assert_array_equal(np.load(store.out / "embeddings.npy"), embedding_matrix(table))
    index = [json.loads(x) for x in (store.out / "index.jsonl").read_text().splitlines()]
    assert index[4] == {"row": 4, "id": "id5", "source": "file:5"}
    assert not store.parts.exists()
    assert store.merge(src) == result  # merging again changes nothing


def test_a_retried_input_replaces_its_failure(tmp_path):
    store, src = open_store(tmp_path), sources(2)
    w = writer(store)
    w.add(src[0], np.zeros(3))
    w.fail(src[1], "timeout")
    w.close()
    store.merge(src)
    store.open({**SETTINGS, "input": "docs.txt"})
    w = writer(store)
    w.add(src[1], np.ones(3))
    w.close()
    store.merge(src)
    assert pq.read_table(store.merged).column("id").to_pylist() == ["id0", "id1"]
    assert store.errors.read_text() == ""


def test_merge_refuses_missing_and_twice_embedded_inputs(tmp_path):
    store, src = open_store(tmp_path), sources(3)
    w = writer(store)
    w.add(src[0], np.zeros(3))
    w.close()
    with pytest.raises(RuntimeError, match="2 inputs are not done yet"):
        store.merge(src)
    w = writer(store)
    w.add(src[0], np.zeros(3))
    w.add(src[1], np.zeros(3))
    w.add(src[2], np.zeros(3))
    w.close()
    with pytest.raises(RuntimeError, match="1 inputs were embedded twice.*id0"):
        store.merge(src)
