"""Batching: padding masks, pad ids, unreadable examples dropped; pretraining masks drawn with the
batch."""

import pytest
import torch
from realdata import tiny_config

from d2v.model import build_data2vec
from d2v.model.data2vec import without_empty
from d2v.training.collate import (
    BatchMasks,
    PretrainSteps,
    collate_audio,
    collate_images,
    collate_text,
    collate_transcribed,
    make_collate,
)
from d2v.training.data.sampler import Example, PretrainBatches, derive_seed
from d2v.training.data.transcripts import TranscribedExample


def test_audio_padding_mask():
    batch = collate_audio([Example(torch.ones(5), 1), None, Example(torch.ones(3), 0)])
    assert batch.x.shape == (2, 5) and batch.labels.tolist() == [1, 0]
    assert batch.padding_mask.tolist() == [[False] * 5, [False] * 3 + [True] * 2]
    assert batch.x[1, 3:].eq(0).all()


def test_text_pads_with_pad_id():
    batch = collate_text([Example(torch.tensor([0, 7, 2]), -1), Example(torch.tensor([0, 2]), -1)], pad_id=1)
    assert batch.x.tolist() == [[0, 7, 2], [0, 2, 1]]
    assert batch.padding_mask.tolist() == [[False, False, False], [False, False, True]]


def test_images_stack_and_all_unreadable_is_none():
    batch = collate_images([Example(torch.zeros(3, 4, 4), 2)] * 3)
    assert batch.x.shape == (3, 3, 4, 4) and batch.padding_mask is None and len(batch) == 3
    assert collate_images([None, None]) is None


def test_transcribed_batches_pad_waveforms_and_targets():
    a = TranscribedExample(torch.ones(5), torch.tensor([3, 4, 1, 5]), "AB C", 7)
    b = TranscribedExample(torch.ones(3), torch.tensor([6]), "D", 2)
    batch = collate_transcribed([a, None, b])
    assert batch.x.shape == (2, 5) and batch.padding_mask[1].tolist() == [False] * 3 + [True] * 2
    assert batch.targets.tolist() == [[3, 4, 1, 5], [6, 0, 0, 0]] and batch.target_lengths.tolist() == [4, 1]
    assert batch.texts == ["AB C", "D"] and batch.indices == [7, 2] and len(batch) == 2 and batch.to(torch.device("cpu")).texts == batch.texts
    assert collate_transcribed([None]) is None


def _examples(modality: str, lengths: list[int]) -> list[Example]:
    g = torch.Generator().manual_seed(len(lengths))
    if modality == "image":
        return [Example(torch.randn(3, 32, 32, generator=g), 0) for _ in lengths]
    if modality == "audio":
        return [Example(torch.randn(n, generator=g), 0) for n in lengths]
    return [Example(torch.randint(4, 100, (n,), generator=g), 0) for n in lengths]


@pytest.mark.parametrize(("modality", "lengths"), [
    ("image", [1, 1, 1]), ("audio", [4000, 2600, 3333]), ("audio", [3000, 3000]), ("text", [30, 17, 9]),
    ("text", [12, 12])])
def test_batch_masks_are_the_masks_the_step_would_draw(modality, lengths):
    """The loader draws, without the model, exactly what `Data2Vec.make_mask` draws from the same
    generator on the model's token grid and token padding (padded and unpadded batches)."""
    cfg = tiny_config(modality)
    student = build_data2vec(cfg)
    batch = make_collate(modality)(_examples(modality, lengths))
    enc = student.encoder.input_encoder
    with torch.no_grad():
        features, token_padding = enc.local_features(batch.x, without_empty(batch.padding_mask))
    token_padding = without_empty(token_padding)
    step = student.make_mask(token_padding, len(batch), enc.mask_grid(features.shape[1]), torch.Generator().manual_seed(5))
    loader = BatchMasks(cfg)(batch, torch.Generator().manual_seed(5))
    assert loader.shape == (len(lengths) * cfg.mask.clone_batch, features.shape[1])
    assert torch.equal(loader, step)


@pytest.mark.parametrize("workers", [0, 2])
def test_pretrain_steps_read_collate_and_mask_each_micro_batch_in_order(workers):
    cfg = tiny_config("text")
    data = [Example(torch.arange(4, 4 + n), 0) for n in (5, 9, 7, 12, 6, 8)]
    dataset = type("Items", (torch.utils.data.Dataset,), {"__len__": lambda self: len(data),
                                                         "__getitem__": lambda self, item: data[item[0]]})()
    batches = PretrainBatches(len(data), 2, steps=3, seed=4, start_step=1, grad_accum=2)
    steps = PretrainSteps(dataset, batches, make_collate("text"), BatchMasks(cfg))
    got = list(torch.utils.data.DataLoader(steps, batch_size=None, collate_fn=PretrainSteps.as_made,
                                           num_workers=workers))
    assert len(got) == len(steps) == 4  # steps 1 and 2, two micro-batches each
    for i, (step, micro) in enumerate([(1, 0), (1, 1), (2, 0), (2, 1)]):
        want = make_collate("text")([data[j] for j, _ in batches.batch(step, micro)])
        assert torch.equal(got[i].x, want.x)
        seeded = torch.Generator().manual_seed(derive_seed(4, "mask", step, micro, 0))
        assert torch.equal(got[i].mask, BatchMasks(cfg)(want, seeded))
    assert PretrainSteps(dataset, batches, make_collate("text"))[0].mask is None
