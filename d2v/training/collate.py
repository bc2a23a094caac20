"""Batching per modality. Unreadable examples arrive as None (already reported) and are dropped.

- images: (B, C, H, W), no padding;
- audio: waveforms zero-padded to the longest, with a (B, L) padding mask (True at padding);
- text: token ids padded with <pad>, with a (B, T) padding mask;
- transcribed audio (CTC): padded waveforms as audio, plus the letter ids padded with 0 and their
  lengths, and the transcripts.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from d2v.tokenizer.spec import PAD_ID
from d2v.training.data.sampler import Example
from d2v.training.data.transcripts import TranscribedExample

__all__ = ["Batch", "TranscribedBatch", "collate_audio", "collate_images", "collate_text", "collate_transcribed",
           "make_collate"]


class Batch(NamedTuple):
    x: Tensor
    """(B, C, H, W) images, (B, L) waveforms or (B, T) token ids."""
    padding_mask: Tensor | None
    """(B, L) / (B, T) True at padding; None for images."""
    labels: Tensor
    """(B,) class indices, -1 when unlabelled."""

    def to(self, device: torch.device) -> "Batch":
        pad = None if self.padding_mask is None else self.padding_mask.to(device, non_blocking=True)
        return Batch(self.x.to(device, non_blocking=True), pad, self.labels.to(device, non_blocking=True))

    def __len__(self) -> int:
        return self.x.shape[0]


def _labels(examples: list[Example]) -> Tensor:
    return torch.tensor([e.label for e in examples], dtype=torch.long)


def collate_images(examples: list[Example | None]) -> Batch | None:
    examples = [e for e in examples if e is not None]
    if not examples:
        return None
    return Batch(torch.stack([e.x for e in examples]), None, _labels(examples))


def _pad(examples: list[Example] | list[TranscribedExample], value: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    n = max(e.x.shape[0] for e in examples)
    x = torch.full((len(examples), n), value, dtype=dtype)
    pad = torch.ones(len(examples), n, dtype=torch.bool)
    for i, e in enumerate(examples):
        x[i, : e.x.shape[0]] = e.x
        pad[i, : e.x.shape[0]] = False
    return x, pad


def collate_audio(examples: list[Example | None]) -> Batch | None:
    examples = [e for e in examples if e is not None]
    if not examples:
        return None
    x, pad = _pad(examples, 0.0, torch.float32)
    return Batch(x, pad, _labels(examples))


def collate_text(examples: list[Example | None], pad_id: int = PAD_ID) -> Batch | None:
    examples = [e for e in examples if e is not None]
    if not examples:
        return None
    x, pad = _pad(examples, pad_id, torch.long)
    return Batch(x, pad, _labels(examples))


class TranscribedBatch(NamedTuple):
    x: Tensor
    """(B, L) waveforms, zero-padded."""
    padding_mask: Tensor
    """(B, L) True at padding."""
    targets: Tensor
    """(B, S) long letter ids, padded with 0 past each row's length."""
    target_lengths: Tensor
    """(B,) long."""
    texts: list[str]
    """The B normalized transcripts."""
    indices: list[int]
    """The B clips' positions in their split."""

    def to(self, device: torch.device) -> "TranscribedBatch":
        return TranscribedBatch(self.x.to(device, non_blocking=True), self.padding_mask.to(device, non_blocking=True),
                                self.targets.to(device), self.target_lengths.to(device), self.texts, self.indices)

    def __len__(self) -> int:
        return self.x.shape[0]


def collate_transcribed(examples: list[TranscribedExample | None]) -> TranscribedBatch | None:
    examples = [e for e in examples if e is not None]
    if not examples:
        return None
    x, pad = _pad(examples, 0.0, torch.float32)
    lengths = torch.tensor([len(e.targets) for e in examples], dtype=torch.long)
    targets = torch.zeros(len(examples), int(lengths.max()), dtype=torch.long)
    for i, e in enumerate(examples):
        targets[i, : len(e.targets)] = e.targets
    return TranscribedBatch(x, pad, targets, lengths, [e.text for e in examples], [e.index for e in examples])


def make_collate(modality: str, pad_id: int = PAD_ID) -> Callable[[list[Example | None]], Batch | None]:
    if modality == "text":
        return functools.partial(collate_text, pad_id=pad_id)
    return {"image": collate_images, "audio": collate_audio}[modality]
