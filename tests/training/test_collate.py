"""Batching: padding masks, pad ids, unreadable examples dropped."""

import torch

from d2v.training.collate import collate_audio, collate_images, collate_text, collate_transcribed
from d2v.training.data.sampler import Example
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
