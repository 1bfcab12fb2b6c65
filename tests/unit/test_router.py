from __future__ import annotations

from dataclasses import fields

import pytest

from server.errors import EditNotFound, FailedPrecondition
from server.router import Router
from server.scope import ScopeCheck
from server.types import Decision, GenerationOptions, Hit, Query, Route
from tests.unit.fakes import FixedGate, FixedMemory, HashEmbedder, RecordingGenerator, make_edit

THRESHOLD = 0.5
OPTIONS = GenerationOptions(max_new_tokens=5)
QUERY = Query("ns", "The capital of France is")

EDIT_A = make_edit("a" * 32, prompt="The capital of France is", target_new="Rome")
EDIT_B = make_edit("b" * 32, prompt="France has its capital in", target_new="Lyon")
EDIT_C = make_edit("c" * 32, prompt="Paris is the capital of", target_new="Spain")


class Parts:
    """A router on fakes, with handles on each fake."""

    def __init__(self, hits: list[Hit], scores: dict[str, float], top_k: int = 4) -> None:
        self.embedder = HashEmbedder(dim=16)
        self.memory = FixedMemory(hits)
        self.base = RecordingGenerator(Route.BASE)
        self.in_scope = RecordingGenerator(Route.PROMPT)
        self.router = Router(
            scope=ScopeCheck(self.embedder, self.memory, FixedGate(scores), top_k),
            memory=self.memory,
            generators={Route.BASE: self.base, Route.PROMPT: self.in_scope},
            in_scope_route=Route.PROMPT,
            threshold=THRESHOLD,
        )

    def answer(self, query: Query, decision: Decision) -> tuple[str, list[str]]:
        pieces: list[str] = []
        generation = self.router.generate(query, decision, OPTIONS, on_text=pieces.append)
        return generation.text, pieces


def test_no_hits_routes_to_base_with_score_zero() -> None:
    parts = Parts([], {})
    decision = parts.router.decide(QUERY)
    assert decision.route is Route.BASE
    assert decision.edit is None
    assert decision.score == 0.0
    assert parts.memory.searches == [("ns", 4)]


def test_below_threshold_routes_to_base_with_untouched_prompt() -> None:
    parts = Parts([Hit(EDIT_A, 0.9), Hit(EDIT_B, 0.8)], {EDIT_A.id: THRESHOLD - 0.01, EDIT_B.id: 0.1})
    decision = parts.router.decide(QUERY)
    assert decision.route is Route.BASE
    assert decision.edit is None
    assert decision.score == pytest.approx(THRESHOLD - 0.01)  # the best score, even though it lost

    text, pieces = parts.answer(QUERY, decision)
    assert parts.base.requests == [(QUERY.text, None, OPTIONS)]
    assert parts.in_scope.requests == []
    assert text == f"base:{QUERY.text}" and "".join(pieces) == text


def test_at_threshold_routes_in_scope() -> None:
    parts = Parts([Hit(EDIT_A, 0.9)], {EDIT_A.id: THRESHOLD})
    decision = parts.router.decide(QUERY)
    assert decision.route is Route.PROMPT
    assert decision.edit == EDIT_A
    assert decision.score == THRESHOLD


def test_in_scope_uses_best_scoring_edit_not_first_hit() -> None:
    # Retrieval order (by similarity) and gate order disagree: the gate wins.
    parts = Parts([Hit(EDIT_A, 0.95), Hit(EDIT_B, 0.9), Hit(EDIT_C, 0.7)],
                  {EDIT_A.id: 0.6, EDIT_B.id: 0.99, EDIT_C.id: 0.7})
    decision = parts.router.decide(QUERY)
    assert decision.route is Route.PROMPT
    assert decision.edit == EDIT_B
    assert decision.score == pytest.approx(0.99)

    text, _ = parts.answer(QUERY, decision)
    assert parts.in_scope.requests == [(QUERY.text, EDIT_B, OPTIONS)]
    assert parts.base.requests == []
    assert text == f"prompt:{QUERY.text}"


@pytest.mark.parametrize("best", range(3))
def test_best_edit_is_found_wherever_it_is_in_the_hits(best: int) -> None:
    edits = [EDIT_A, EDIT_B, EDIT_C]
    scores = {e.id: (0.9 if i == best else 0.55 + 0.1 * i / 3) for i, e in enumerate(edits)}
    parts = Parts([Hit(e, 0.8) for e in edits], scores)
    assert parts.router.decide(QUERY).edit == edits[best]


def test_decide_embeds_the_query_and_searches_the_callers_namespace_with_top_k() -> None:
    parts = Parts([], {}, top_k=7)
    parts.router.decide(Query("tenant-1", "where is rome"))
    assert parts.embedder.calls == [["where is rome"]]
    assert parts.memory.searches == [("tenant-1", 7)]


def test_timings_are_non_negative() -> None:
    parts = Parts([Hit(EDIT_A, 0.9)], {EDIT_A.id: 0.9})
    timings = parts.router.decide(QUERY).timings
    for f in fields(timings):
        assert getattr(timings, f.name) >= 0.0, f.name


def test_score_goes_to_the_decided_routes_generator() -> None:
    parts = Parts([Hit(EDIT_A, 0.9)], {EDIT_A.id: 0.9})
    decision = parts.router.decide(QUERY)
    parts.router.score(QUERY, decision, "Rome")
    assert parts.in_scope.scored == [(QUERY.text, EDIT_A, "Rome")]
    assert parts.base.scored == []


# --- forced routes ------------------------------------------------------------------------------

def test_forced_base_route_skips_retrieval() -> None:
    parts = Parts([Hit(EDIT_A, 0.9)], {EDIT_A.id: 1.0})
    decision = parts.router.decide(Query("ns", QUERY.text, route=Route.BASE))
    assert (decision.route, decision.edit) == (Route.BASE, None)
    assert parts.memory.searches == [] and parts.embedder.calls == []


def test_forced_in_scope_route_takes_best_edit_whatever_its_score() -> None:
    parts = Parts([Hit(EDIT_A, 0.9), Hit(EDIT_B, 0.8)], {EDIT_A.id: 0.01, EDIT_B.id: 0.2})
    decision = parts.router.decide(Query("ns", QUERY.text, route=Route.PROMPT))
    assert decision.route is Route.PROMPT
    assert decision.edit == EDIT_B


def test_forced_in_scope_route_without_hits_is_failed_precondition() -> None:
    parts = Parts([], {})
    with pytest.raises(FailedPrecondition):
        parts.router.decide(Query("ns", QUERY.text, route=Route.PROMPT))


def test_forced_edit_id_is_looked_up_in_the_callers_namespace() -> None:
    parts = Parts([Hit(EDIT_A, 0.9), Hit(EDIT_B, 0.8)], {})
    decision = parts.router.decide(Query("ns", QUERY.text, route=Route.PROMPT, edit_id=EDIT_B.id))
    assert (decision.route, decision.edit) == (Route.PROMPT, EDIT_B)
    assert parts.memory.searches == []
    with pytest.raises(EditNotFound):
        parts.router.decide(Query("other-ns", QUERY.text, route=Route.PROMPT, edit_id=EDIT_B.id))


@pytest.mark.parametrize("route", [Route.IKE, Route.COUNTERFACTUAL, Route.PARAMETRIC])
def test_forced_route_the_server_lacks_is_failed_precondition(route: Route) -> None:
    parts = Parts([Hit(EDIT_A, 0.9)], {EDIT_A.id: 0.9})
    with pytest.raises(FailedPrecondition, match=route.value):
        parts.router.decide(Query("ns", QUERY.text, route=route))
    with pytest.raises(FailedPrecondition, match=route.value):
        parts.router.decide(Query("ns", QUERY.text, route=route, edit_id=EDIT_A.id))


def test_router_without_base_or_in_scope_generator_is_refused() -> None:
    parts = Parts([], {})
    scope = ScopeCheck(parts.embedder, parts.memory, FixedGate(), 1)
    common = {"scope": scope, "memory": parts.memory, "threshold": 0.5}
    with pytest.raises(ValueError, match="base"):
        Router(generators={Route.PROMPT: parts.in_scope}, in_scope_route=Route.PROMPT, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ike"):
        Router(generators={Route.BASE: parts.base}, in_scope_route=Route.IKE, **common)  # type: ignore[arg-type]
