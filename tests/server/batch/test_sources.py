"""Inputs of a batch job: directories, manifests, text files, ids and shards."""

import json

import pytest

from d2v.server.batch.sources import SourceError, list_sources, parse_shard, shard_of


def test_directory_takes_the_modality_files_recursively_in_order(tmp_path):
    for rel in ["b/2.png", "a/1.JPG", "a/deep/3.webp", "c.wav", "notes.txt", ".hidden.png", ".cache/4.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    images = list_sources(tmp_path, "image")
    assert [s.id for s in images] == ["a/1.JPG", "a/deep/3.webp", "b/2.png"]
    assert images[0].path == tmp_path / "a" / "1.JPG" and images[0].source == "a/1.JPG"
    assert [s.id for s in list_sources(tmp_path, "audio")] == ["c.wav"]
    assert [s.id for s in list_sources(tmp_path, "text")] == ["notes.txt"]


def test_directory_without_files_of_the_modality_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(SourceError, match="no image files"):
        list_sources(tmp_path, "image")
    with pytest.raises(SourceError, match="no such file"):
        list_sources(tmp_path / "missing", "image")
    with pytest.raises(SourceError, match="not a regular file or a directory"):
        list_sources("/dev/zero", "text")


def test_manifest_rows_and_bad_lines(tmp_path):
    (tmp_path / "clips").mkdir()
    rows = [json.dumps({"id": "a", "path": "clips/a.wav"}), json.dumps({"path": "/abs/b.wav"}), "",
            "{not json", json.dumps({"id": "c", "text": "a document"}), json.dumps({"id": "d", "other": 1}),
            json.dumps([1, 2])]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    s = list_sources(manifest, "audio")
    assert [x.id for x in s] == ["a", "2", "line 4", "c", "d", "line 7"]
    assert s[0].path == tmp_path / "clips" / "a.wav" and s[0].source == "clips/a.wav"
    assert str(s[1].path) == "/abs/b.wav"
    assert s[2].error.startswith("manifest line is not JSON") and s[2].source == "m.jsonl:4"
    assert s[3].text == "a document" and s[3].path is None
    assert "neither a 'path' nor a 'text'" in s[4].error
    assert s[5].error == "manifest line is not a JSON object"


def test_manifest_token_ids(tmp_path):
    rows = [{"id": "a", "tokens": [0, 5, 2]}, {"id": "b", "tokens": []}, {"id": "c", "tokens": [0, "x"]},
            {"id": "d", "tokens": [0, 1.5]}, {"id": "e", "tokens": [True]}, {"id": "f", "tokens": "0 5 2"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = list_sources(manifest, "text")
    assert s[0].tokens == (0, 5, 2) and s[0].text is None and s[0].source == "m.jsonl:1"
    assert s[1].tokens == () and s[1].error is None  # empty: refused by the model's decoder, by name
    assert all(x.error == "manifest 'tokens' must be a list of integers" for x in s[2:5])
    assert "nor a 'tokens' list" in s[5].error


def test_duplicate_ids_are_refused(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps({"id": "x", "text": t}) for t in "ab") + "\n")
    with pytest.raises(SourceError, match="ids must be unique.*'x'"):
        list_sources(manifest, "text")


def test_text_file_one_document_per_line(tmp_path):
    f = tmp_path / "docs.txt"
    f.write_bytes(b"first line\n\nthird \xff line\nfourth\n")
    s = list_sources(f, "text")
    assert [x.id for x in s] == ["1", "2", "3", "4"]
    assert s[0].text == "first line" and s[1].text == "" and s[3].source == "docs.txt:4"
    assert "not UTF-8" in s[2].error
    with pytest.raises(SourceError, match="not a single file"):
        list_sources(f, "image")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(SourceError, match="is empty"):
        list_sources(tmp_path / "empty.txt", "text")


def test_shards_partition_the_ids_and_do_not_move_when_inputs_are_added():
    ids = [f"doc-{i}" for i in range(1000)]
    shards = [{x for x in ids if shard_of(x, 3) == k} for k in range(3)]
    assert set().union(*shards) == set(ids) and sum(map(len, shards)) == len(ids)
    assert all(250 < len(s) < 420 for s in shards)  # a hash spreads them
    assert [shard_of(x, 3) for x in ids] == [shard_of(x, 3) for x in ids]


def test_parse_shard():
    assert parse_shard("1/4", {}) == (1, 4)
    assert parse_shard(None, {}) == (0, 1)
    assert parse_shard(None, {"RANK": "3", "WORLD_SIZE": "8"}) == (3, 8)
    assert parse_shard("0/2", {"RANK": "3", "WORLD_SIZE": "8"}) == (0, 2)
    for bad in ["4/4", "-1/2", "1", "a/b", "0/0"]:
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad, {})
