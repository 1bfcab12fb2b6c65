"""Which cases `scripts/evaluate.py` runs: --seed, --offset and --limit."""

from __future__ import annotations

import pytest

from client.evaluation.cli import select_cases


def test_the_offset_skips_cases_before_the_limit_counts() -> None:
    cases = list(range(10))
    assert select_cases(cases, None, 0, None) == cases
    assert select_cases(cases, None, 0, 3) == [0, 1, 2]
    assert select_cases(cases, None, 3, 4) == [3, 4, 5, 6]
    assert select_cases(cases, None, 8, 5) == [8, 9]  # past the end: what is there
    assert select_cases(cases, None, 7, None) == [7, 8, 9]


def test_slices_of_one_shuffle_are_disjoint_and_cover_it() -> None:
    cases = list(range(20))
    slices = [select_cases(cases, 3, offset, 5) for offset in (0, 5, 10, 15)]
    assert sum(slices, []) == select_cases(cases, 3, 0, None) != cases  # shuffled, every case once
    assert cases == list(range(20))  # the caller's list is not shuffled in place


def test_a_negative_offset_or_limit_is_refused() -> None:
    with pytest.raises(SystemExit, match="must not be negative"):
        select_cases([1, 2], None, -1, None)
    with pytest.raises(SystemExit, match="must not be negative"):
        select_cases([1, 2], None, 0, -2)
