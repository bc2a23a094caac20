"""The on-disk layouts of docs/data.md: class folders, JSONL manifests with relative paths,
unlabelled folders, dataset.json labels."""

import json

import pytest

from d2v.training.data.manifest import dataset_labels, read_records, read_split


def test_class_folders(digits_dir):
    records = read_split(digits_dir, "train", "image")
    assert len(records) == json.loads((digits_dir / "dataset.json").read_text())["splits"]["train"]
    assert {r.label for r in records} == {str(i) for i in range(10)}
    assert all(r.source.endswith(".png") and not r.is_text for r in records)
    assert dataset_labels(digits_dir, records) == [str(i) for i in range(10)]


def test_jsonl_relative_paths(speech_dir):
    records = read_split(speech_dir, "test", "audio")
    assert records and all((speech_dir / "clips").as_posix() in r.source for r in records)
    assert {r.label for r in records} <= {"zero", "one", "two"}


def test_unlabelled_folder_and_other_files_ignored(tmp_path, digits_dir):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    src = next((digits_dir / "train" / "3").iterdir())
    (folder / "a.png").write_bytes(src.read_bytes())
    (folder / "sub" / "b.PNG").write_bytes(src.read_bytes())
    (folder / "notes.md").write_text("not an image")
    (folder / ".hidden.png").write_bytes(src.read_bytes())
    records = read_records(folder, "image")
    assert sorted(r.source.split("/")[-1] for r in records) == ["a.png", "b.PNG"]
    assert all(r.label is None for r in records)


def test_labels_without_dataset_json_are_sorted(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "x", "label": "zebra"}\n{"text": "y", "label": "ant"}\n')
    records = read_split(tmp_path, "train", "text")
    assert dataset_labels(tmp_path, records) == ["ant", "zebra"]


def test_missing_split_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="validation"):
        read_split(tmp_path, "validation", "image")
