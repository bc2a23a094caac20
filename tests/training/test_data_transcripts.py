"""Transcribed manifests (--task ctc): normalization, the letter vocabulary built from the training
transcripts, targets, and one clear error per kind of bad line."""

import json

import numpy as np
import pytest
import soundfile as sf

from d2v.ctc import CTCVocabulary, ids_to_text
from d2v.training.data.transcripts import (
    BLANK,
    TranscribedAudioDataset,
    TranscriptError,
    encode_transcript,
    letter_vocabulary,
    normalize_transcript,
    read_transcribed,
    split_manifest,
    unseen_characters,
)
from d2v.training.finetune_ctc import ctc_head


def write_manifest(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_normalization():
    assert normalize_transcript("  Turn\tLeft \n") == "TURN LEFT"
    assert normalize_transcript("cafe\u0301 ") == "CAF\u00c9"  # NFC: e + combining acute -> one character
    assert normalize_transcript(" \n ") == ""


def test_vocabulary_is_blank_delimiter_then_sorted_letters():
    labels = letter_vocabulary(["GO BACK", "STOP", "NINE"])
    assert labels == [BLANK, "|", "A", "B", "C", "E", "G", "I", "K", "N", "O", "P", "S", "T"]
    head = ctc_head(labels)
    assert (head.type, head.blank_id, head.word_delimiter, head.ignore_ids) == ("ctc", 0, "|", [])
    ids = {s: i for i, s in enumerate(labels)}
    target = encode_transcript("GO BACK", ids)
    assert [labels[i] for i in target] == list("GO|BACK")
    # the decoder reads the targets back into the transcript: vocabulary, targets and decoding line up
    assert ids_to_text(target, CTCVocabulary.from_head(head.to_dict())) == "GO BACK"
    with pytest.raises(KeyError):
        encode_transcript("GO HOME", ids)
    assert unseen_characters(["GO HOME", "STOP!"], labels) == {"H": 1, "M": 1, "!": 1}


def test_read_and_resolve_splits(tmp_path):
    (tmp_path / "clips").mkdir()
    write_manifest(tmp_path / "train.jsonl", [{"path": "clips/a.flac", "text": "Go back", "speaker": 3}, "",
                                              {"path": "/abs/b.wav", "text": "stop"}])
    write_manifest(tmp_path / "validation.jsonl", [{"path": "c.flac", "text": "go"}])
    clips = read_transcribed(split_manifest(tmp_path, "train", training=True))
    assert [(c.path, c.text) for c in clips] == [(str(tmp_path / "clips/a.flac"), "GO BACK"), ("/abs/b.wav", "STOP")]
    assert clips[1].where == f"{tmp_path / 'train.jsonl'}:3"
    # --data may be the training manifest itself; the other splits are found beside it, or named as files
    assert split_manifest(tmp_path / "train.jsonl", "anything", training=True) == tmp_path / "train.jsonl"
    assert split_manifest(tmp_path / "train.jsonl", "validation") == tmp_path / "validation.jsonl"
    assert split_manifest("elsewhere", str(tmp_path / "validation.jsonl")) == tmp_path / "validation.jsonl"
    with pytest.raises(TranscriptError, match="no manifest for the split 'test'"):
        split_manifest(tmp_path, "test")


@pytest.mark.parametrize("line, message", [
    ({"path": "a.flac"}, 'no "text"'),
    ({"path": "a.flac", "text": "  "}, '"text" is empty'),
    ({"path": "a.flac", "text": None}, 'no "text"'),
    ({"path": "a.flac", "text": 7}, '"text" must be a string, got int'),
    ({"path": "a.flac", "text": "left|right"}, "reserved for word boundaries"),
    ({"text": "stop"}, 'no "path"'),
    ('["a.flac", "stop"]', "not a JSON object"),
    ('{"path": "a.flac", "text": "st', "not valid JSON"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    manifest = tmp_path / "train.jsonl"
    write_manifest(manifest, [{"path": "ok.flac", "text": "go"}, line])
    with pytest.raises(TranscriptError, match=message) as e:
        read_transcribed(manifest)
    assert str(e.value).startswith(f"{manifest}:2: ") and "\n" not in str(e.value)


def test_empty_and_undecodable_manifests(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(TranscriptError, match="no clips"):
        read_transcribed(empty)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"path": "a.flac", "text": "caf\xe9"}\n')
    with pytest.raises(TranscriptError, match="not UTF-8"):
        read_transcribed(latin)


def test_dataset_reads_whole_clips_and_skips_long_ones_in_training(tmp_path, spoken_digits):
    for i, wav in enumerate(spoken_digits[:2]):
        sf.write(tmp_path / f"{i}.flac", wav, 16000)
    write_manifest(tmp_path / "train.jsonl", [{"path": "0.flac", "text": "seven"}, {"path": "1.flac", "text": "three"},
                                              {"path": "missing.flac", "text": "zero"}])
    clips = read_transcribed(tmp_path / "train.jsonl")
    labels = letter_vocabulary(c.text for c in clips)
    shortest = min(len(w) for w in spoken_digits[:2])
    train = TranscribedAudioDataset(clips, labels, 16000, shortest, 400, train=True)
    evaluation = TranscribedAudioDataset(clips, None, 16000, shortest, 400, train=False)
    lengths = [len(w) for w in spoken_digits[:2]]
    kept = [train[(i, 0)] for i in range(2)]
    assert [e is None for e in kept] == [n > shortest for n in lengths]  # too long to train on: cannot be cropped
    assert all(e is not None and len(e.x) == n for e, n in zip([evaluation[(i, 0)] for i in range(2)], lengths,
                                                               strict=True))  # evaluation reads it whole
    example = next(e for e in kept if e is not None)
    assert [labels[i] for i in example.targets] == list(example.text)
    assert np.isfinite(example.x.numpy()).all()
    assert train[(2, 0)] is None and evaluation[(2, 0)] is None  # unreadable: reported and skipped
