"""What a batch embedding job embeds: the inputs of a directory, a JSONL manifest or a text file, each
with a stable id, and which shard of a job each input belongs to.

- a directory: every file of the model's modality under it, recursively (hidden files and folders
  skipped), sorted by relative path; the id and the source are the relative path. Image files are
  those Pillow reads, audio files those libsndfile reads, text files `.txt` (one document each);
- a JSONL manifest (`.jsonl`): one object per line with `id` (optional: the line number) and `path`
  (relative to the manifest's folder), `text`, or (text models) `tokens`: a list of token ids, the
  model's whole input as `/embed` takes it;
- a text file (text models only): one document per line; the id is the line number (from 1), the
  source `file:line`.

A manifest line that cannot be used (not JSON; no path, text or token ids) becomes a source carrying its
error, so that the job records it in its errors file and goes on; duplicate ids stop the job before it
starts, since "each input exactly once" needs them unique.
"""

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Source", "SourceError", "list_sources", "media_extensions", "parse_shard", "shard_of"]


class SourceError(ValueError):
    """The job's input as a whole cannot be used (missing, empty, duplicate ids, wrong kind)."""


@dataclass(frozen=True)
class Source:
    """One input: `id` (unique in the job), `source` (where it came from, for people), and either a
    file to read (`path`), an inline document (`text`), token ids (`tokens`), or why it cannot be used
    (`error`)."""

    id: str
    source: str
    path: Path | None = None
    text: str | None = None
    error: str | None = None
    tokens: tuple[int, ...] | None = None


def media_extensions(modality: str) -> frozenset[str]:
    """File name suffixes (lower case, with the dot) of the modality's readable files."""
    if modality == "image":
        from PIL import Image

        return frozenset(ext.lower() for ext in Image.registered_extensions())
    if modality == "audio":
        import soundfile as sf

        exts = {"." + fmt.lower() for fmt in sf.available_formats()}
        return frozenset(exts | {".oga", ".opus", ".aif", ".aiff", ".snd"})
    if modality == "text":
        return frozenset({".txt"})
    raise ValueError(f"unknown modality {modality!r}")


def _walk(root: Path, exts: frozenset[str]) -> list[Source]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in exts:
                rel = (Path(folder) / name).relative_to(root).as_posix()
                found.append(Source(rel, rel, path=Path(folder) / name))
    return sorted(found, key=lambda s: s.id)


def _manifest(file: Path) -> list[Source]:
    sources = []
    for number, raw in enumerate(file.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{file.name}:{number}"
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            sources.append(Source(f"line {number}", where, error=f"manifest line is not JSON: {e}"))
            continue
        if not isinstance(row, dict):
            sources.append(Source(f"line {number}", where, error="manifest line is not a JSON object"))
            continue
        ident = str(row["id"]) if row.get("id") is not None else str(number)
        path, text, tokens = row.get("path"), row.get("text"), row.get("tokens")
        if isinstance(path, str) and path:
            full = Path(path) if Path(path).is_absolute() else file.parent / path
            sources.append(Source(ident, path, path=full))
        elif isinstance(text, str):
            sources.append(Source(ident, where, text=text))
        elif isinstance(tokens, list):
            if all(type(t) is int for t in tokens):
                sources.append(Source(ident, where, tokens=tuple(tokens)))
            else:
                sources.append(Source(ident, where, error="manifest 'tokens' must be a list of integers"))
        else:
            sources.append(Source(ident, where, error="manifest line has neither a 'path' nor a 'text' string "
                                                      "nor a 'tokens' list"))
    return sources


def _lines(file: Path) -> list[Source]:
    sources = []
    for number, raw in enumerate(file.read_bytes().splitlines(), start=1):
        where = f"{file.name}:{number}"
        try:
            sources.append(Source(str(number), where, text=raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            sources.append(Source(str(number), where, error=f"the line is not UTF-8: {e}"))
    return sources


def list_sources(input_path: str | Path, modality: str) -> list[Source]:
    """Every input of a job, in a fixed order (raises `SourceError` when there is nothing usable)."""
    path = Path(input_path)
    if path.is_dir():
        exts = media_extensions(modality)
        sources = _walk(path, exts)
        if not sources:
            raise SourceError(f"{path}: no {modality} files under it (looked for {', '.join(sorted(exts)[:12])}"
                              f"{', ...' if len(exts) > 12 else ''})")
    elif path.is_file():
        if path.suffix.lower() == ".jsonl":
            sources = _manifest(path)
        elif modality == "text":
            sources = _lines(path)
        else:
            raise SourceError(f"{path}: {modality} models take a directory of files or a JSONL manifest "
                              "(.jsonl), not a single file")
        if not sources:
            raise SourceError(f"{path} is empty")
    elif path.exists():
        raise SourceError(f"{path}: not a regular file or a directory (a FIFO or a device cannot be an --input)")
    else:
        raise SourceError(f"{path}: no such file or directory")
    dupes = [x for x, n in Counter(s.id for s in sources).items() if n > 1]
    if dupes:
        raise SourceError(f"{path}: ids must be unique, and {len(dupes)} repeat (first: {dupes[:3]})")
    return sources


def shard_of(ident: str, num_shards: int) -> int:
    """The shard an input belongs to: a hash of its id, so it stays put when inputs are added."""
    digest = hashlib.blake2b(ident.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_shards


def parse_shard(spec: str | None, env: dict[str, str] | None = None) -> tuple[int, int]:
    """`I/N` (0 <= I < N) -> (I, N); without a spec, torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    env = os.environ if env is None else env
    if spec is None:
        if "WORLD_SIZE" in env and "RANK" in env:
            return int(env["RANK"]), int(env["WORLD_SIZE"])
        return 0, 1
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {spec!r}: I must lie in [0, N) and N >= 1")
    return i, n
