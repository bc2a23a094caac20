"""Word and character error rates (d2v.wer) on cases worked out by hand, and the corpus-level sums."""

import pytest

from d2v.wer import ErrorCounts, edit_distance, error_counts


@pytest.mark.parametrize("ref, hyp, distance", [
    ("", "", 0),
    ("abc", "abc", 0),
    ("abc", "", 3),                 # three deletions
    ("", "ab", 2),                  # two insertions
    ("kitten", "sitting", 3),       # k->s, e->i, +g
    ("flaw", "lawn", 2),            # -f, +n
    ("intention", "execution", 5),
    (["turn", "left"], ["turn", "right"], 1),
    (["go", "back"], ["back", "go"], 2),
])
def test_edit_distance(ref, hyp, distance):
    assert edit_distance(ref, hyp) == distance == edit_distance(hyp, ref)


def test_word_and_character_rates():
    c = ErrorCounts()
    c.add("THREE ONE FOUR", "THREE ONE FOUR")
    assert (c.wer, c.cer, c.exact) == (0.0, 0.0, 1)
    c = ErrorCounts()
    c.add("TURN LEFT", "TURN RIGHT")          # 1 of 2 words; LEFT -> RIGHT is 4 of 9 characters
    assert c.wer == 0.5 and c.char_errors == 4 and c.chars == 9 and c.cer == pytest.approx(4 / 9)
    c = ErrorCounts()
    c.add("GO BACK", "GOBACK")                # a lost space: 2 word errors (a substitution and a deletion), 1 character
    assert (c.word_errors, c.words, c.char_errors, c.chars) == (2, 2, 1, 7)
    c = ErrorCounts()
    c.add("STOP", "STOP STOP STOP")           # insertions push WER above 1
    assert c.wer == 2.0 and c.exact == 0
    c = ErrorCounts()
    c.add("NO", "")
    assert (c.wer, c.cer) == (1.0, 1.0)


def test_whitespace_is_not_an_error():
    c = error_counts(["  GO   BACK "], ["GO BACK"])
    assert (c.word_errors, c.char_errors, c.exact) == (0, 0, 1)


def test_corpus_rates_sum_edits_over_references():
    """Not a mean of per-utterance rates: 1 error in 1 word and 0 in 4 words is 1/5, not 1/2."""
    c = error_counts(["STOP", "ONE TWO THREE FOUR"], ["GO", "ONE TWO THREE FOUR"])
    assert c.wer == pytest.approx(1 / 5) and c.utterances == 2 and c.exact == 1
    merged = error_counts(["STOP"], ["GO"]) + error_counts(["ONE TWO THREE FOUR"], ["ONE TWO THREE FOUR"])
    assert merged == c
    assert error_counts([], []).wer == 0.0
    with pytest.raises(ValueError):
        error_counts(["A"], [])
