"""How well the server reads free-text corrections: Correct (dry run) on labelled corrections, scored.

A correction succeeds when the server returns a validated edit whose subject and target equal the expected
ones, case-insensitively after stripping; an ambiguous one succeeds when the server refuses it with
FAILED_PRECONDITION. Nothing is stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

from client import EditcacheClient
from client.errors import EditcacheError, FailedPrecondition


@dataclass(frozen=True)
class CorrectionCase:
    question: str
    answer: str
    correction: str
    subject: str | None  # None: ambiguous, the server must refuse it
    target: str | None


@dataclass(frozen=True)
class CorrectionOutcome:
    case: CorrectionCase
    ok: bool
    subject: str | None  # what the server read; None when it refused
    target: str | None
    error: str | None
    seconds: float


def load_correction_cases(path: Path) -> list[CorrectionCase]:
    """The "corrections" (with subject and target) and "ambiguous" lists of a fixture file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    cases = [CorrectionCase(c["question"], c["answer"], c["correction"], c["subject"], c["target"])
             for c in data.get("corrections", [])]
    cases += [CorrectionCase(c["question"], c["answer"], c["correction"], None, None)
              for c in data.get("ambiguous", [])]
    if not cases:
        raise ValueError(f"{path} has no 'corrections' or 'ambiguous' entries")
    return cases


def same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().lower() == b.strip().lower()


def evaluate_case(client: EditcacheClient, case: CorrectionCase) -> CorrectionOutcome:
    started = perf_counter()
    try:
        edit = client.correct(case.question, case.answer, case.correction, dry_run=True).edit
    except FailedPrecondition as exc:
        return CorrectionOutcome(case, case.subject is None, None, None, exc.details, perf_counter() - started)
    except EditcacheError as exc:  # anything else is a failure of the server, not a refusal
        return CorrectionOutcome(case, False, None, None, str(exc), perf_counter() - started)
    ok = same(edit.subject, case.subject) and same(edit.target_new, case.target)
    return CorrectionOutcome(case, ok, edit.subject, edit.target_new, None, perf_counter() - started)


def evaluate_corrections(
    client: EditcacheClient, cases: list[CorrectionCase], progress: Callable[[CorrectionOutcome], None] | None = None
) -> list[CorrectionOutcome]:
    outcomes = []
    for case in cases:
        outcomes.append(evaluate_case(client, case))
        if progress is not None:
            progress(outcomes[-1])
    return outcomes


def summarize_corrections(outcomes: list[CorrectionOutcome]) -> dict[str, float | int]:
    clear = [o for o in outcomes if o.case.subject is not None]
    ambiguous = [o for o in outcomes if o.case.subject is None]
    return {
        "corrections": len(clear),
        "success_rate": sum(o.ok for o in clear) / len(clear) if clear else 0.0,
        "subject_rate": sum(same(o.subject, o.case.subject) for o in clear) / len(clear) if clear else 0.0,
        "target_rate": sum(same(o.target, o.case.target) for o in clear) / len(clear) if clear else 0.0,
        "refused": sum(o.subject is None for o in clear),
        "ambiguous": len(ambiguous),
        "ambiguous_refused_rate": sum(o.ok for o in ambiguous) / len(ambiguous) if ambiguous else 0.0,
        "mean_seconds": sum(o.seconds for o in outcomes) / len(outcomes) if outcomes else 0.0,
    }
