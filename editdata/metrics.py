"""Scoring functions for knowledge-editing evaluation: pure, standard library only.

The two headline measures (DESIGN.md, "Evaluation protocol") are `exact_match` under real greedy
generation and teacher-forced `token_accuracy` (EasyEdit's rewrite_acc); `agreement` scores
teacher-forced locality against the unedited model, and `ngram_entropy` is ROME's fluency measure.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

_WHITESPACE = re.compile(r"\s+")
# Stand-in for nltk.word_tokenize (which ROME uses): runs of word characters, or single punctuation marks.
_TOKEN = re.compile(r"\w+|[^\w\s]")

# ROME's compute_n_gram_entropy defaults: n-gram orders and their weights.
NGRAM_ORDERS: tuple[int, ...] = (2, 3)
NGRAM_WEIGHTS: tuple[float, ...] = (2 / 3, 4 / 3)


def normalise(text: str) -> str:
    """Strip, casefold, and collapse runs of whitespace to one space."""
    return _WHITESPACE.sub(" ", text.strip().casefold())


def exact_match(continuation: str, answers: Sequence[str]) -> bool:
    """True when some answer, normalised, is a prefix of the normalised continuation.

    Answers that normalise to the empty string never match (an empty prefix would match anything).
    """
    generated = normalise(continuation)
    return any(answer and generated.startswith(answer) for answer in map(normalise, answers))


def token_accuracy(target_ids: Sequence[int], predicted_ids: Sequence[int]) -> float:
    """Share of target positions whose teacher-forced argmax equals the target token (EasyEdit rewrite_acc).

    `predicted_ids[i]` is the model's argmax at the position that predicts `target_ids[i]`. Raises
    ValueError for an empty target or when the lengths differ.
    """
    if not target_ids:
        raise ValueError("token_accuracy needs at least one target token; got an empty target")
    if len(predicted_ids) != len(target_ids):
        raise ValueError(f"token_accuracy: {len(predicted_ids)} predictions for {len(target_ids)} target tokens")
    return sum(t == p for t, p in zip(target_ids, predicted_ids, strict=True)) / len(target_ids)


def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of positions where two teacher-forced predictions agree (locality against the unedited model).

    Raises ValueError when the lengths differ or both are empty.
    """
    if len(a) != len(b):
        raise ValueError(f"agreement: predictions of different lengths ({len(a)} and {len(b)})")
    if not a:
        raise ValueError("agreement needs at least one position; got two empty predictions")
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def ngram_entropy(text: str) -> float:
    """ROME's fluency measure (compute_n_gram_entropy), in bits.

    With H_n the Shannon entropy (log base 2) of the frequency distribution of the text's n-grams,
    the value is mean(w_n * H_n) over n in (2, 3) with weights w = (2/3, 4/3), i.e.
    (2/3 * H_2 + 4/3 * H_3) / 2 = H_2 / 3 + 2 * H_3 / 3, exactly as
    kmeng01/rome experiments/py/eval_utils_counterfact.py computes it (np.mean of the weighted list).
    ROME tokenises with nltk.word_tokenize; here the tokens are the regex `\\w+|[^\\w\\s]` (words and
    single punctuation marks), which agrees on plain text but not on contractions ("don't"). A text
    with fewer than n tokens has no n-grams and contributes H_n = 0, as it does in ROME.
    """
    tokens = _TOKEN.findall(text)
    orders = zip(NGRAM_ORDERS, NGRAM_WEIGHTS, strict=True)
    weighted = [w * _entropy_bits(Counter(_ngrams(tokens, n))) for n, w in orders]
    return sum(weighted) / len(weighted)


def mean_or_none(values: Iterable[float]) -> float | None:
    """Arithmetic mean, or None when there are no values (a metric with no probes is absent, not 0)."""
    items = list(values)
    return sum(items) / len(items) if items else None


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (q a whole number in [0, 100]) with linear interpolation, as numpy.percentile's default
    (statistics.quantiles' "inclusive" method). ValueError for no values or q outside [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    if not isinstance(q, int) or not 0 <= q <= 100:
        raise ValueError(f"percentile q must be a whole number in [0, 100], got {q}")
    if len(values) == 1:  # statistics.quantiles wants two points (before Python 3.13)
        return float(values[0])
    # The 99 cut points are the 1st to 99th percentiles; the ends are the 0th and the 100th.
    return [min(values), *statistics.quantiles(values, n=100, method="inclusive"), max(values)][q]


def _ngrams(tokens: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _entropy_bits(counts: Counter[tuple[str, ...]]) -> float:
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
