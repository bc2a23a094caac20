"""Dataset layout on disk (docs/data.md) and the records it lists.

A dataset directory holds its splits either as JSONL manifests or as class folders:

    <dataset>/dataset.json          optional: name, modality, labels (in class order), description
    <dataset>/<split>.jsonl         one object per line: {"path": ..., "label": ...} (images, audio;
                                    relative paths start at the dataset directory) or
                                    {"text": ..., "label": ...} (text); "label" is optional
    <dataset>/<split>/<label>/*     class folders: every file is one example of class <label>

Pretraining also reads, used whole and unlabelled: one JSONL manifest, a folder of files (searched
recursively), or (text) a plain file with one example per line. A line or file that cannot be read is
reported (which one, why) and skipped; the run goes on.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "Record",
    "dataset_labels",
    "read_records",
    "read_split",
    "report_skip",
]

logger = logging.getLogger("d2v.training.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus", ".caf")
TEXT_EXTENSIONS = (".txt",)
_EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS, "text": TEXT_EXTENSIONS}

_reported: set[str] = set()


def report_skip(what: str, why: str) -> None:
    """Report once that `what` (a file, or file:line) is skipped, and why."""
    if what not in _reported:
        _reported.add(what)
        logger.warning("skipping %s: %s", what, why)


@dataclass(frozen=True)
class Record:
    """One example: a file path (images, audio, text files) or the text itself."""

    source: str
    label: str | None = None
    is_text: bool = False
    """`source` is the example's text rather than a path."""


def _read_jsonl(path: Path, modality: str) -> list[Record]:
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            report_skip(where, f"not valid JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            report_skip(where, "not a JSON object")
            continue
        label = obj.get("label")
        label = None if label is None else str(label)
        if modality == "text" and isinstance(obj.get("text"), str):
            records.append(Record(obj["text"], label, is_text=True))
        elif isinstance(obj.get("path"), str):
            p = Path(obj["path"])
            records.append(Record(str(p if p.is_absolute() else path.parent / p), label))
        else:
            want = '"text" or "path"' if modality == "text" else '"path"'
            report_skip(where, f"no {want} field")
    return records


def _files(folder: Path, modality: str) -> list[Path]:
    ext = _EXTENSIONS[modality]
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in ext and not p.name.startswith("."))


def _read_folder(folder: Path, modality: str) -> list[Record]:
    """Class folders (<folder>/<label>/...) when every entry is a folder, else unlabelled files."""
    entries = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    classes = [p for p in entries if p.is_dir()]
    if classes and len(classes) == len(entries):
        return [Record(str(f), c.name) for c in classes for f in _files(c, modality)]
    return [Record(str(f)) for f in _files(folder, modality)]


def _read_lines(path: Path) -> list[Record]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [Record(line.strip(), None, is_text=True) for line in lines if line.strip()]


def read_records(path: str | Path, modality: str) -> list[Record]:
    """Every record of one manifest (.jsonl), folder, or (text) plain text file."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, modality)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".jsonl":
        return _read_jsonl(path, modality)
    if modality == "text":
        return _read_lines(path)
    raise ValueError(f"{path}: expected a .jsonl manifest or a folder for {modality} data")


def read_split(data: str | Path, split: str, modality: str) -> list[Record]:
    """The records of `split` in a dataset directory (<split>.jsonl or <split>/)."""
    root = Path(data)
    for candidate in (root / f"{split}.jsonl", root / split):
        if candidate.exists():
            return read_records(candidate, modality)
    raise FileNotFoundError(f"{root} has no split {split!r} (looked for {split}.jsonl and {split}/)")


def dataset_labels(data: str | Path, records: list[Record]) -> list[str]:
    """Class names in order: dataset.json's "labels" when present, else the sorted labels seen."""
    meta = Path(data) / "dataset.json"
    if meta.is_file():
        labels = json.loads(meta.read_text()).get("labels")
        if labels:
            return [str(x) for x in labels]
    return sorted({r.label for r in records if r.label is not None})
