"""Transcribed speech for CTC fine-tuning: the manifests, the letter vocabulary, the targets and the
dataset of (waveform, letter ids) pairs.

A manifest is JSONL, one clip per line: {"path": "clips/0001.flac", "text": "three one four"}
(relative paths start at the manifest's directory; other fields are kept for you and ignored).

- Transcripts are normalized before anything else (`normalize_transcript`): Unicode NFC, upper case,
  every run of whitespace one space, stripped. Upper case as the letter vocabularies of the reference
  recognizers (fairseq's dict.ltr.txt, the HF models), so every d2v recognizer answers in one case.
- The vocabulary is built from the training transcripts (`letter_vocabulary`): id 0 the CTC blank
  `<blank>`, id 1 the word delimiter `|`, then every other character seen, sorted. Words are written
  as their letters joined by `|` (no leading or trailing `|`), as HF's CTC tokenizer does.
- A character of a validation or test transcript that training never saw is kept in the reference:
  the model cannot emit it, so it counts as an error in WER and CER (the honest score); the run
  names such characters once per split. `|` is reserved and refused in any transcript.
- A line without a string "path", without a string "text", with a transcript that is empty once
  normalized, or that is not a JSON object stops the run with one line naming the file, the line and
  the field (`TranscriptError`). An audio file that cannot be read is reported and skipped, as for
  classification.
"""

import json
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from d2v.preprocessing import TRIM_SILENCE, trim_silence
from d2v.training.data.audio import crop_waveform, load_audio
from d2v.training.data.manifest import report_skip

__all__ = ["BLANK", "WORD_DELIMITER", "TranscribedAudioDataset", "TranscribedClip", "TranscribedExample",
           "TranscriptError", "encode_transcript", "letter_vocabulary", "normalize_transcript", "read_transcribed",
           "split_manifest", "unseen_characters"]

logger = logging.getLogger("d2v.training.data")
BLANK = "<blank>"
WORD_DELIMITER = "|"


class TranscriptError(ValueError):
    """A transcribed manifest cannot be used; the message names the file, the line and the field."""


def normalize_transcript(text: str) -> str:
    """NFC, upper case, whitespace runs -> one space, stripped: "Turn  left\\n" -> "TURN LEFT"."""
    return " ".join(unicodedata.normalize("NFC", text).upper().split())


@dataclass(frozen=True)
class TranscribedClip:
    """One manifest line: the audio file and its normalized transcript."""

    path: str
    text: str
    where: str
    """`manifest:line`, for messages."""


def split_manifest(data: str | Path, split: str, training: bool = False) -> Path:
    """The manifest of a split: `split` itself when it names a .jsonl file; else `<split>.jsonl` in the
    dataset directory `data`, or beside `data` when `data` is a manifest (which is then the training
    split's, `training`)."""
    if split.endswith(".jsonl") and Path(split).is_file():
        return Path(split)
    root = Path(data)
    if not root.exists():
        raise TranscriptError(f"{root} does not exist")
    is_manifest = root.suffix == ".jsonl" and root.is_file()
    if is_manifest and training:
        return root
    folder = root.parent if is_manifest else root
    candidate = folder / f"{split}.jsonl"
    if not candidate.is_file():
        raise TranscriptError(f"{folder} has no manifest for the split {split!r} (looked for {candidate})")
    return candidate


def _clip(obj: object, manifest: Path, where: str) -> TranscribedClip:
    if not isinstance(obj, dict):
        raise TranscriptError(f"{where}: not a JSON object")
    path, text = obj.get("path"), obj.get("text")
    if not isinstance(path, str) or not path:
        raise TranscriptError(f'{where}: no "path" (a string naming the audio file)')
    if text is None:
        raise TranscriptError(f'{where}: no "text" (the transcript; --task ctc needs one for every clip)')
    if not isinstance(text, str):
        raise TranscriptError(f'{where}: "text" must be a string, got {type(text).__name__}')
    norm = normalize_transcript(text)
    if not norm:
        raise TranscriptError(f'{where}: "text" is empty')
    if WORD_DELIMITER in norm:
        raise TranscriptError(f'{where}: "text" holds {WORD_DELIMITER!r}, which is reserved for word boundaries')
    p = Path(path)
    return TranscribedClip(str(p if p.is_absolute() else manifest.parent / p), norm, where)


def read_transcribed(manifest: str | Path) -> list[TranscribedClip]:
    """Every clip of a JSONL manifest, transcripts normalized; blank lines are skipped.

    Raises:
        TranscriptError: the first bad line, as `file:line: what is wrong`; or an empty manifest."""
    manifest = Path(manifest)
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise TranscriptError(f"{manifest}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    clips = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{manifest}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TranscriptError(f"{where}: not valid JSON ({e.msg})") from None
        clips.append(_clip(obj, manifest, where))
    if not clips:
        raise TranscriptError(f"{manifest}: no clips")
    return clips


def letter_vocabulary(texts: Iterable[str]) -> list[str]:
    """The CTC output symbols in id order: [`<blank>`, `|`, every other character of the (normalized)
    texts, sorted]."""
    chars = {c for t in texts for c in t if c != " "}
    return [BLANK, WORD_DELIMITER, *sorted(chars)]


def encode_transcript(text: str, ids: dict[str, int]) -> list[int]:
    """A normalized transcript -> letter ids, words separated by the `|` id: "GO BACK" -> G O | B A C K.

    Raises:
        KeyError: a character outside the vocabulary."""
    return [ids[c] for c in text.replace(" ", WORD_DELIMITER)]


def unseen_characters(texts: Iterable[str], labels: list[str]) -> Counter:
    """How often each character outside the vocabulary `labels` occurs in `texts` (spaces aside)."""
    known = set(labels)
    return Counter(c for t in texts for c in t if c != " " and c not in known)


class TranscribedExample(NamedTuple):
    x: Tensor
    """(L,) float32 waveform at the model's rate."""
    targets: Tensor
    """(S,) long letter ids (empty when the split is only decoded)."""
    text: str
    """The normalized transcript (the reference of WER and CER)."""
    index: int
    """The clip's position in its split."""


class TranscribedAudioDataset(torch.utils.data.Dataset):
    """Clips -> (waveform, letter ids, transcript); items are (index, seed) pairs (the seed is unused:
    transcribed clips are never cropped, so there is nothing random to draw).

    A clip longer than `max_samples` cannot be cropped without cutting its transcript: in training it
    is reported and skipped, in evaluation it is read whole. A clip shorter than the feature
    extractor's receptive field is zero-padded to it.
    """

    def __init__(self, clips: list[TranscribedClip], labels: list[str] | None, sample_rate: int, max_samples: int,
                 min_samples: int, train: bool, trim: bool = False):
        self.clips = clips
        ids = {s: i for i, s in enumerate(labels or [])}
        self.targets = [encode_transcript(c.text, ids) for c in clips] if labels is not None else None
        self.sample_rate, self.max_samples, self.min_samples = sample_rate, max_samples, min_samples
        self.train, self.trim = train, trim

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, item: tuple[int, int]) -> TranscribedExample | None:
        index, _ = item
        clip = self.clips[index]
        try:
            wav = load_audio(clip.path, self.sample_rate)
        except Exception as e:  # noqa: BLE001 - any decoder failure: report the file and skip it
            report_skip(clip.path, f"cannot read the audio ({type(e).__name__}: {e})")
            return None
        if self.trim:
            wav = trim_silence(wav, self.sample_rate, **TRIM_SILENCE)
        if self.train and len(wav) > self.max_samples:
            report_skip(clip.path, f"{len(wav) / self.sample_rate:.1f} s is longer than --max-seconds "
                                   f"{self.max_samples / self.sample_rate:g}, and a transcribed clip cannot be cropped")
            return None
        wav = crop_waveform(wav, len(wav), self.min_samples, None)  # pads to the receptive field only
        targets = torch.tensor(self.targets[index] if self.targets is not None else [], dtype=torch.long)
        return TranscribedExample(torch.from_numpy(np.ascontiguousarray(wav)), targets, clip.text, index)
