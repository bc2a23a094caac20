"""Greedy CTC decoding (d2v.ctc): repeats, blanks, word boundaries, ignored ids, padding, and that
the module stays torch-free."""

import subprocess
import sys

import numpy as np
import pytest

from d2v.ctc import CTCVocabulary, greedy_decode, greedy_ids, ids_to_text

# fairseq letter dictionary layout: blank <s> = 0, </s> ignored, "|" the word delimiter
LABELS = ("<s>", "<pad>", "</s>", "<unk>", "|", "A", "B", "C")
VOCAB = CTCVocabulary(LABELS, blank_id=0, word_delimiter="|", ignore_ids=frozenset({2}))
ID = {s: i for i, s in enumerate(LABELS)}


def emissions(path: str, pad_to: int | None = None) -> np.ndarray:
    """One frame per character of `path` ("_" = blank, "." = </s>), as one-hot logits (T, V); padded
    frames (up to pad_to) put their maximum on "A" so that reading them would show."""
    alias = {"_": "<s>", ".": "</s>"}
    ids = [ID[alias.get(c, c)] for c in path]
    n = pad_to or len(ids)
    e = np.full((n, len(LABELS)), -5.0, dtype=np.float32)
    e[np.arange(len(ids)), ids] = 5.0
    e[len(ids):, ID["A"]] = 9.0
    return e


def decode(path: str) -> str:
    return greedy_decode(emissions(path)[None], VOCAB)[0]


@pytest.mark.parametrize("path, text", [
    ("AAAB", "AB"),                 # repeats collapse
    ("AA_AB", "AAB"),               # a blank between repeats keeps both
    ("A_B_C", "ABC"),
    ("AB|C", "AB C"),               # word boundary
    ("AB||_|C", "AB C"),            # repeated delimiters: one boundary
    ("|AB|", "AB"),                 # leading / trailing delimiters
    ("||_|", ""),
    ("A.B", "AB"),                  # </s> produces nothing
    ("", ""),                       # no frames
    ("____", ""),                   # only blanks
])
def test_greedy_decode(path, text):
    assert decode(path) == text


def test_unknown_symbols_are_kept_literally():
    e = emissions("A")
    e = np.concatenate([e, np.eye(len(LABELS), dtype=np.float32)[[ID["<unk>"]]] * 5])
    assert greedy_decode(e[None], VOCAB) == ["A<unk>"]


def test_padding_frames_are_never_read():
    batch = np.stack([emissions("AB|C", pad_to=8), emissions("B_B", pad_to=8), emissions("", pad_to=8)])
    lengths = [4, 3, 0]
    mask = np.arange(8)[None, :] >= np.array(lengths)[:, None]
    assert greedy_decode(batch, VOCAB, lengths=lengths) == ["AB C", "BB", ""]
    assert greedy_decode(batch, VOCAB, padding_mask=mask) == ["AB C", "BB", ""]
    assert greedy_decode(batch, VOCAB)[2] == "A"  # without lengths the padding frames are read
    with pytest.raises(ValueError, match="not both"):
        greedy_decode(batch, VOCAB, lengths=lengths, padding_mask=mask)
    with pytest.raises(ValueError, match="3 lengths"):
        greedy_decode(batch[:2], VOCAB, lengths=lengths)


def test_ids_and_text_helpers():
    assert greedy_ids(emissions("AA_A|B"), blank_id=0) == [5, 5, 4, 6]
    assert greedy_ids(emissions("AA_A|B")) == [5, 0, 5, 4, 6]
    assert greedy_ids(emissions("AA_A|B"), length=2, blank_id=0) == [5]
    assert ids_to_text([5, 4, 4, 6], VOCAB) == "A B"
    no_delimiter = CTCVocabulary(("_", "a", " ", "b"), blank_id=0, word_delimiter=None)
    assert ids_to_text([1, 2, 2, 3, 2], no_delimiter) == "a b"


def test_vocabulary_from_head():
    head = {"type": "ctc", "labels": list(LABELS), "blank_id": 0, "word_delimiter": "|", "ignore_ids": [2],
            "pooling": "mean", "dropout": 0.0}
    assert CTCVocabulary.from_head(head) == VOCAB
    with pytest.raises(ValueError, match="not a CTC head"):
        CTCVocabulary.from_head({"type": "mean_pool", "labels": ["a"]})
    with pytest.raises(ValueError, match="blank_id 9"):
        CTCVocabulary(LABELS, blank_id=9)
    with pytest.raises(ValueError, match="3 classes but the vocabulary 8"):
        greedy_decode(np.zeros((1, 2, 3), dtype=np.float32), VOCAB)


def test_module_is_torch_free():
    code = "import sys, d2v.ctc; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fairseq_reference_transcripts():
    """fairseq's own emissions (tests/fixtures/fairseq_d2v2/audio_ctc) decode to fairseq's own
    transcripts and token ids, per clip and for its padded batch."""
    from pathlib import Path

    fixture = Path(__file__).resolve().parent / "fixtures" / "fairseq_d2v2" / "audio_ctc"
    expected = np.load(fixture / "expected.npz")
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [line.split()[0] for line in
                                                   (fixture / "dict.ltr.txt").read_text().splitlines()]
    vocab = CTCVocabulary(tuple(symbols), blank_id=0, word_delimiter="|", ignore_ids=frozenset({2}))
    for i, text in enumerate(expected["transcripts"]):
        emissions = expected[f"emissions_{i}"]
        assert greedy_ids(emissions, blank_id=0) == expected[f"tokens_{i}"].tolist()
        assert greedy_decode(emissions[None], vocab) == [text]
    batch = greedy_decode(expected["emissions_batch"], vocab, lengths=expected["frame_lengths"])
    assert batch == expected["transcripts_batch"].tolist()
    assert greedy_decode(expected["emissions_batch"], vocab) == batch  # padded frames are blanks there too
