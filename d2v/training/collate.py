"""Batching per modality. Unreadable examples arrive as None (already reported) and are dropped.

- images: (B, C, H, W), no padding;
- audio: waveforms zero-padded to the longest, with a (B, L) padding mask (True at padding);
- text: token ids padded with <pad>, with a (B, T) padding mask;
- transcribed audio (CTC): padded waveforms as audio, plus the letter ids padded with 0 and their
  lengths, and the transcripts.

Pretraining draws each micro-batch's M masks per sample where the batch is made (`BatchMasks`,
`PretrainSteps`), in the data loader's workers, so the step itself starts from ready masks. The
masks are the ones the step would have drawn: the same generator, seeded from (seed, "mask", step,
micro-batch, rank), on the same token grid and lengths.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from d2v.model.config import ModelConfig
from d2v.model.masking import draw_mask
from d2v.model.modality import conv_frames
from d2v.tokenizer.spec import PAD_ID
from d2v.training.data.sampler import Example, PretrainBatches, derive_seed
from d2v.training.data.transcripts import TranscribedExample

__all__ = ["Batch", "BatchMasks", "PretrainSteps", "TranscribedBatch", "collate_audio", "collate_images",
           "collate_text", "collate_transcribed", "make_collate"]


class Batch(NamedTuple):
    x: Tensor
    """(B, C, H, W) images, (B, L) waveforms or (B, T) token ids."""
    padding_mask: Tensor | None
    """(B, L) / (B, T) True at padding; None for images."""
    labels: Tensor
    """(B,) class indices, -1 when unlabelled."""
    mask: Tensor | None = None
    """(B*M, T_tokens) pretraining masks, True at masked tokens (`BatchMasks`); None when the step
    draws them."""

    def with_mask(self, mask: Tensor | None) -> "Batch":
        """This batch with other masks (`_replace` cannot: `len` is the batch size)."""
        return Batch(self.x, self.padding_mask, self.labels, mask)

    def to(self, device: torch.device) -> "Batch":
        pad = None if self.padding_mask is None else self.padding_mask.to(device, non_blocking=True)
        mask = None if self.mask is None else self.mask.to(device, non_blocking=True)
        return Batch(self.x.to(device, non_blocking=True), pad, self.labels.to(device, non_blocking=True), mask)

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


class BatchMasks:
    """Draws a pretraining batch's masks without the model: the token grid and each sample's token
    count follow from the encoder config (image: the patch grid; audio: the feature extractor's
    frames, `conv_frames`; text: one token per id), so this runs in the data loader's workers.
    `Data2Vec.make_mask` on the step's token padding draws the same masks from the same generator."""

    def __init__(self, cfg: ModelConfig):
        self.mask = cfg.mask
        self.modality = cfg.encoder.modality
        image, audio = cfg.encoder.image, cfg.encoder.audio
        self.image_grid = (image.image_size // image.patch_size,) * 2 if image is not None else None
        self.conv_layers = audio.conv_layers if audio is not None else None

    def token_padding(self, batch: Batch) -> tuple[tuple[int, ...], Tensor | None]:
        """The grid masks are drawn on, and the (B, T) token padding (None when nothing is padded)."""
        if self.modality == "image":
            return self.image_grid, None
        pad = batch.padding_mask
        if self.modality == "audio":
            frames = conv_frames(batch.x.shape[1], self.conv_layers)
            if pad is None:
                return (frames,), None
            lengths = conv_frames((~pad).sum(1), self.conv_layers)
            pad = torch.arange(frames)[None, :] >= lengths[:, None]
        elif pad is None:
            return (batch.x.shape[1],), None
        return (pad.shape[1],), pad if bool(pad.any()) else None

    def __call__(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """(B*M, T_tokens) bool masks, True at masked tokens."""
        grid, pad = self.token_padding(batch)
        return draw_mask(self.mask, grid, pad, len(batch), generator)


class PretrainSteps(torch.utils.data.Dataset):
    """The micro-batches of a pretraining run as a dataset (for a DataLoader with `batch_size=None`
    and `collate_fn=PretrainSteps.as_made`):
    item i is micro-batch i of the run from `batches.start_step` on, its examples read and collated
    and, with `masks`, its masks drawn from (seed, "mask", step, micro-batch, rank). None when every
    example of the micro-batch was unreadable."""

    def __init__(self, dataset: torch.utils.data.Dataset, batches: PretrainBatches,
                 collate: Callable[[list[Example | None]], Batch | None], masks: BatchMasks | None = None):
        self.dataset, self.batches, self.collate, self.masks = dataset, batches, collate, masks

    def __len__(self) -> int:
        return len(self.batches)

    @staticmethod
    def as_made(batch: Batch | None) -> Batch | None:
        """The loader's `collate_fn`: items are batches already (its default would rebuild them)."""
        return batch

    def __getitem__(self, i: int) -> Batch | None:
        b = self.batches
        step, micro = divmod(i, b.grad_accum)
        step += b.start_step
        batch = self.collate([self.dataset[item] for item in b.batch(step, micro)])
        if batch is None or self.masks is None:
            return batch
        generator = torch.Generator().manual_seed(derive_seed(b.seed, "mask", step, micro, b.rank))
        return batch.with_mask(self.masks(batch, generator))
