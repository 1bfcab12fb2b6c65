from __future__ import annotations

from dataclasses import fields

import pytest

from server.router import Router
from server.types import Decision, GenerationOptions, Hit, Query, Route
from tests.unit.fakes import FixedGate, FixedMemory, HashEmbedder, RecordingGenerator, make_edit

THRESHOLD = 0.5
OPTIONS = GenerationOptions(max_new_tokens=5)
QUERY_TEXT = "The capital of France is"

EDIT_A = make_edit("a" * 32, prompt="The capital of France is", target_new="Rome")
EDIT_B = make_edit("b" * 32, prompt="France has its capital in", target_new="Lyon")
EDIT_C = make_edit("c" * 32, prompt="Paris is the capital of", target_new="Spain")


def build(hits: list[Hit], scores: dict[str, float], top_k: int = 4) -> tuple[Router, FixedMemory]:
    memory = FixedMemory(hits)
    router = Router(
        embedder=HashEmbedder(dim=16),
        memory=memory,
        gate=FixedGate(scores),
        base=RecordingGenerator(Route.BASE),
        in_scope=RecordingGenerator(Route.PROMPT),
        threshold=THRESHOLD,
        top_k=top_k,
    )
    return router, memory


def answer(router: Router, decision: Decision, text: str = QUERY_TEXT) -> tuple[str, list[str]]:
    pieces: list[str] = []
    generation = router.generate(Query("ns", text, OPTIONS), decision, on_text=pieces.append)
    return generation.text, pieces


def test_no_hits_routes_to_base_with_score_zero() -> None:
    router, memory = build([], {})
    decision = router.decide("ns", QUERY_TEXT)
    assert decision.route is Route.BASE
    assert decision.edit is None
    assert decision.score == 0.0
    assert memory.searches == [("ns", 4)]


def test_below_threshold_routes_to_base_with_untouched_prompt() -> None:
    hits = [Hit(EDIT_A, 0.9), Hit(EDIT_B, 0.8)]
    router, _ = build(hits, {EDIT_A.id: THRESHOLD - 0.01, EDIT_B.id: 0.1})
    decision = router.decide("ns", QUERY_TEXT)
    assert decision.route is Route.BASE
    assert decision.edit is None
    assert decision.score == pytest.approx(THRESHOLD - 0.01)  # the best score, even though it lost

    text, pieces = answer(router, decision)
    assert router.base.requests == [(QUERY_TEXT, None, OPTIONS)]  # type: ignore[attr-defined]
    assert router.in_scope.requests == []  # type: ignore[attr-defined]
    assert text == f"base:{QUERY_TEXT}" and "".join(pieces) == text


def test_at_threshold_routes_in_scope() -> None:
    router, _ = build([Hit(EDIT_A, 0.9)], {EDIT_A.id: THRESHOLD})
    decision = router.decide("ns", QUERY_TEXT)
    assert decision.route is Route.PROMPT
    assert decision.edit == EDIT_A
    assert decision.score == THRESHOLD


def test_in_scope_uses_best_scoring_edit_not_first_hit() -> None:
    # Retrieval order (by similarity) and gate order disagree: the gate wins.
    hits = [Hit(EDIT_A, 0.95), Hit(EDIT_B, 0.9), Hit(EDIT_C, 0.7)]
    router, _ = build(hits, {EDIT_A.id: 0.6, EDIT_B.id: 0.99, EDIT_C.id: 0.7})
    decision = router.decide("ns", QUERY_TEXT)
    assert decision.route is Route.PROMPT
    assert decision.edit == EDIT_B
    assert decision.score == pytest.approx(0.99)

    text, _ = answer(router, decision)
    assert router.in_scope.requests == [(QUERY_TEXT, EDIT_B, OPTIONS)]  # type: ignore[attr-defined]
    assert router.base.requests == []  # type: ignore[attr-defined]
    assert text == f"prompt:{QUERY_TEXT}"


@pytest.mark.parametrize("best", range(3))
def test_best_edit_is_found_wherever_it_is_in_the_hits(best: int) -> None:
    edits = [EDIT_A, EDIT_B, EDIT_C]
    scores = {e.id: (0.9 if i == best else 0.55 + 0.1 * i / 3) for i, e in enumerate(edits)}
    router, _ = build([Hit(e, 0.8) for e in edits], scores)
    assert router.decide("ns", QUERY_TEXT).edit == edits[best]


def test_decide_asks_memory_in_the_callers_namespace_with_top_k() -> None:
    router, memory = build([], {}, top_k=7)
    router.decide("tenant-1", QUERY_TEXT)
    assert memory.searches == [("tenant-1", 7)]


def test_timings_are_non_negative() -> None:
    router, _ = build([Hit(EDIT_A, 0.9)], {EDIT_A.id: 0.9})
    timings = router.decide("ns", QUERY_TEXT).timings
    for f in fields(timings):
        assert getattr(timings, f.name) >= 0.0, f.name
