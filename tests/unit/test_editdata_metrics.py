"""editdata/metrics.py: scores on inputs whose right answer is known by construction."""

from __future__ import annotations

import math

import pytest

from editdata.metrics import agreement, exact_match, mean_or_none, ngram_entropy, normalise, percentile, token_accuracy


def test_normalise() -> None:
    assert normalise("  The\tEiffel \n Tower ") == "the eiffel tower"
    assert normalise("STRASSE") == normalise("straße")  # casefold, not lower


@pytest.mark.parametrize(
    ("continuation", "answers", "expected"),
    [
        (" Paris, the capital of France.", ["Paris"], True),
        ("  PARIS   is", ["paris is"], True),
        ("in Paris", ["Paris"], False),  # the answer must be the prefix, not a substring
        (" Par", ["Paris"], False),  # a truncated answer does not match
        (" Rome", ["Paris", "Rome"], True),  # any acceptable answer
        ("anything", [""], False),  # empty answers never match
        ("anything", ["   "], False),
        ("anything", [], False),
    ],
)
def test_exact_match(continuation: str, answers: list[str], expected: bool) -> None:
    assert exact_match(continuation, answers) is expected


def test_token_accuracy_zero_one_and_partial() -> None:
    assert token_accuracy([5, 6, 7], [5, 6, 7]) == 1.0
    assert token_accuracy([5, 6, 7], [1, 2, 3]) == 0.0
    assert token_accuracy([5, 6, 7, 8], [5, 0, 7, 0]) == 0.5


def test_token_accuracy_rejects_empty_and_mismatched() -> None:
    with pytest.raises(ValueError, match="empty target"):
        token_accuracy([], [])
    with pytest.raises(ValueError, match="2 predictions for 3"):
        token_accuracy([1, 2, 3], [1, 2])


def test_agreement() -> None:
    assert agreement([1, 2, 3], [1, 2, 3]) == 1.0
    assert agreement([1, 2, 3], [4, 5, 6]) == 0.0
    assert agreement([1, 2, 3, 4], [1, 9, 3, 9]) == 0.5
    with pytest.raises(ValueError, match="different lengths"):
        agreement([1], [1, 2])
    with pytest.raises(ValueError):
        agreement([], [])


def test_ngram_entropy_hand_computed() -> None:
    # tokens a b a b: bigrams (a,b) x2, (b,a) x1 -> H2 = log2(3) - 2/3; trigrams (a,b,a), (b,a,b) -> H3 = 1
    h2 = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    h3 = 1.0
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    # four distinct tokens: 3 distinct bigrams, 2 distinct trigrams
    assert ngram_entropy("w x y z") == pytest.approx((2 / 3 * math.log2(3) + 4 / 3 * 1.0) / 2)


def test_ngram_entropy_punctuation_is_a_token_and_short_texts_score_zero() -> None:
    assert ngram_entropy("a,b") == ngram_entropy("a , b")
    assert ngram_entropy("") == 0.0
    assert ngram_entropy("one") == 0.0
    assert ngram_entropy("one two") == 0.0  # one bigram (entropy 0), no trigram


def test_ngram_entropy_repetitive_text_is_lower_than_varied_text() -> None:
    repetitive = " ".join(["the cat"] * 20)
    varied = "the quick brown fox jumps over the lazy dog while a curious cat watches from the old wooden fence"
    assert ngram_entropy(repetitive) < ngram_entropy(varied)


def test_mean_or_none() -> None:
    assert mean_or_none([]) is None
    assert mean_or_none(iter([1.0, 0.0, 0.5])) == 0.5


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 25, 1.75),  # rank 0.75 between 1 and 2; input order does not matter
        ([10.0, 20.0, 30.0, 40.0, 50.0], 90, 46.0),  # rank 3.6 -> 40 + 0.6 * 10
        ([7.0], 99, 7.0),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)

