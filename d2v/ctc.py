"""Greedy CTC decoding of per-frame emissions into text. numpy only: the server and the onnxruntime
backend import it without torch.

    emissions (B, T, V) -> argmax per frame -> collapse repeats -> drop the blank (and ignored ids)
    -> symbols joined, the word delimiter ("|") a word boundary -> words joined by single spaces

Frames past each input's length (padding) are never read. Leading, trailing and repeated word
delimiters produce no empty words: a transcript is its words separated by one space. The
vocabulary comes from a checkpoint's `head` section (type "ctc"): `CTCVocabulary.from_head`.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CTCVocabulary", "greedy_decode", "greedy_ids", "ids_to_text"]


@dataclass(frozen=True)
class CTCVocabulary:
    """The output symbols of a CTC model and how to read them."""

    labels: tuple[str, ...]
    """Symbol of every output id, in id order."""
    blank_id: int
    """The CTC blank."""
    word_delimiter: str | None = "|"
    """The symbol that separates words (None: symbols are concatenated as they are)."""
    ignore_ids: frozenset[int] = frozenset()
    """Ids besides the blank that produce no text (fairseq's </s>)."""

    def __post_init__(self) -> None:
        if not 0 <= self.blank_id < len(self.labels):
            raise ValueError(f"blank_id {self.blank_id} is outside the vocabulary of {len(self.labels)}")

    @classmethod
    def from_head(cls, head: Mapping[str, Any]) -> "CTCVocabulary":
        """From a checkpoint config.json's `head` section of type "ctc"."""
        if head.get("type") != "ctc":
            raise ValueError(f"not a CTC head (type {head.get('type')!r})")
        return cls(tuple(head["labels"]), int(head["blank_id"]), head.get("word_delimiter"),
                   frozenset(int(i) for i in head.get("ignore_ids") or ()))


def greedy_ids(emissions: np.ndarray, length: int | None = None, blank_id: int | None = None) -> list[int]:
    """Best path of one input: argmax per frame, repeats collapsed, blanks dropped.

    Args:
        emissions: (T, V) logits or log-probabilities.
        length: frames to read (the rest is padding); default all T.
        blank_id: the id to drop after collapsing (None: keep every id).

    Returns:
        The output ids in order.
    """
    if emissions.ndim != 2:
        raise ValueError(f"expected emissions of shape (T, V), got {emissions.shape}")
    frames = emissions[: emissions.shape[0] if length is None else max(int(length), 0)]
    if frames.shape[0] == 0:
        return []
    best = frames.argmax(axis=-1)
    keep = np.ones(best.shape[0], dtype=bool)
    keep[1:] = best[1:] != best[:-1]  # first frame of every run
    ids = best[keep]
    if blank_id is not None:
        ids = ids[ids != blank_id]
    return [int(i) for i in ids]


def ids_to_text(ids: Iterable[int], vocab: CTCVocabulary) -> str:
    """Collapsed, blank-free ids -> text: ignored ids dropped, the word delimiter a word boundary,
    words joined by single spaces."""
    pieces = []
    for i in ids:
        if i == vocab.blank_id or i in vocab.ignore_ids:
            continue
        symbol = vocab.labels[i]
        pieces.append(" " if symbol == vocab.word_delimiter else symbol)
    return " ".join("".join(pieces).split())


def greedy_decode(
    emissions: np.ndarray,
    vocab: CTCVocabulary,
    lengths: Sequence[int] | np.ndarray | None = None,
    padding_mask: np.ndarray | None = None,
) -> list[str]:
    """Greedy transcripts of a batch.

    Args:
        emissions: (B, T, V) per-frame logits or log-probabilities (`forward_head` of a CTC head).
        vocab: the model's vocabulary.
        lengths: (B,) real frames per input; or
        padding_mask: (B, T) True at padded frames (the token padding mask of `forward_features`).
            Neither: every frame is read.

    Returns:
        B transcripts.
    """
    if emissions.ndim != 3:
        raise ValueError(f"expected emissions of shape (B, T, V), got {emissions.shape}")
    if emissions.shape[-1] != len(vocab.labels):
        raise ValueError(f"emissions have {emissions.shape[-1]} classes but the vocabulary {len(vocab.labels)}")
    if lengths is not None and padding_mask is not None:
        raise ValueError("give lengths or padding_mask, not both")
    if padding_mask is not None:
        lengths = (~np.asarray(padding_mask, dtype=bool)).sum(axis=1)
    if lengths is not None and len(lengths) != emissions.shape[0]:
        raise ValueError(f"{len(lengths)} lengths for a batch of {emissions.shape[0]}")
    return [
        ids_to_text(greedy_ids(e, None if lengths is None else int(lengths[b]), vocab.blank_id), vocab)
        for b, e in enumerate(emissions)
    ]
