"""Word and character error rates of transcripts (speech recognition), pure Python.

    WER = (substitutions + deletions + insertions) / reference words
    CER = the same over characters (the space between words included)

Both are corpus rates: the edits of every utterance summed, divided by the summed reference length
(not a mean of per-utterance rates), as fairseq and jiwer report them. The edit distance is
Levenshtein's with unit costs. Texts are compared as given, split on whitespace; bring reference and
hypothesis to one case first (`d2v.training.data.transcripts.normalize_transcript`).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["ErrorCounts", "edit_distance", "error_counts"]


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: the fewest substitutions, deletions and insertions that turn
    `reference` into `hypothesis` (sequences of words, characters, or any comparable items)."""
    if len(reference) < len(hypothesis):
        reference, hypothesis = hypothesis, reference  # the distance is symmetric; keep the row short
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        current = [i]
        for j, h in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1,              # r deleted
                               current[j - 1] + 1,           # h inserted
                               previous[j - 1] + (r != h)))  # r kept or substituted by h
        previous = current
    return previous[-1]


@dataclass
class ErrorCounts:
    """Summed edits and reference lengths over a set of utterances; `+` merges two sets (processes)."""

    word_errors: int = 0
    words: int = 0
    char_errors: int = 0
    chars: int = 0
    utterances: int = 0
    exact: int = 0
    """Utterances transcribed without any error."""

    def add(self, reference: str, hypothesis: str) -> None:
        """Count one utterance."""
        ref_words, hyp_words = reference.split(), hypothesis.split()
        ref_chars, hyp_chars = " ".join(ref_words), " ".join(hyp_words)
        w = edit_distance(ref_words, hyp_words)
        self.word_errors += w
        self.words += len(ref_words)
        self.char_errors += edit_distance(ref_chars, hyp_chars)
        self.chars += len(ref_chars)
        self.utterances += 1
        self.exact += int(w == 0 and ref_chars == hyp_chars)

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(self.word_errors + other.word_errors, self.words + other.words,
                           self.char_errors + other.char_errors, self.chars + other.chars,
                           self.utterances + other.utterances, self.exact + other.exact)

    @property
    def wer(self) -> float:
        """Word error rate (0 for no reference words and no errors; may exceed 1 with insertions)."""
        return self.word_errors / self.words if self.words else float(self.word_errors > 0)

    @property
    def cer(self) -> float:
        """Character error rate."""
        return self.char_errors / self.chars if self.chars else float(self.char_errors > 0)


def error_counts(references: Iterable[str], hypotheses: Iterable[str]) -> ErrorCounts:
    """The summed counts of pairs of (reference, hypothesis) transcripts."""
    counts = ErrorCounts()
    for ref, hyp in zip(references, hypotheses, strict=True):
        counts.add(ref, hyp)
    return counts
