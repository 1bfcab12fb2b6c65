"""Where in-scope queries go: the counterfactual model when it is served and sure, IKE when it is unsure, the base
model when it abstains."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from server.app import in_scope_routes
from server.router import Router
from server.scope import ScopeCheck
from server.types import Edit, Hit, Judgement, Query, Route
from tests.unit.fakes import FixedGate, FixedMemory, HashEmbedder, RecordingGenerator, make_edit

EDIT = make_edit("a" * 32, prompt="The capital of France is", target_new="Rome")
QUERY = "France's capital city is"


class JudgeProbe:
    """A counterfactual model's judgement, fixed, recording what it was asked."""

    def __init__(self, confidence: float, abstains: bool = False) -> None:
        self.judgement = Judgement(abstains, confidence)
        self.asked: list[tuple[Edit, str, bool]] = []
        self.related: list[tuple[Edit, ...]] = []  # the related facts of each judgement

    def __call__(self, edit: Edit, text: str, with_confidence: bool, related: Sequence[Edit] = ()) -> Judgement:
        self.asked.append((edit, text, with_confidence))
        self.related.append(tuple(related))
        return self.judgement


def router(judge: JudgeProbe, min_confidence: float = 0.5, gate_score: float = 0.9,
           baked: bool = False) -> Router:
    memory = FixedMemory([Hit(EDIT, 0.9)])
    routes = (Route.BASE, Route.COUNTERFACTUAL, Route.IKE, Route.PROMPT, Route.PARAMETRIC)
    return Router(
        scope=ScopeCheck(HashEmbedder(16), memory, FixedGate({EDIT.id: gate_score}), 4), memory=memory,
        generators={r: RecordingGenerator(r) for r in routes}, in_scope_route=Route.COUNTERFACTUAL, threshold=0.5,
        baked=lambda edit: baked, judge=judge, min_confidence=min_confidence, fallback_route=Route.IKE,
    )


def test_a_sure_counterfactual_model_answers() -> None:
    probe = JudgeProbe(0.8)
    decision = router(probe).decide(Query("ns", QUERY))
    assert (decision.route, decision.edit, decision.score, decision.abstained) == (
        Route.COUNTERFACTUAL, EDIT, 0.9, False)
    assert probe.asked == [(EDIT, QUERY, True)]


@pytest.mark.parametrize(("confidence", "route"), [(0.49, Route.IKE), (0.5, Route.COUNTERFACTUAL)])
def test_under_the_minimum_confidence_ike_answers(confidence: float, route: Route) -> None:
    decision = router(JudgeProbe(confidence)).decide(Query("ns", QUERY))
    assert (decision.route, decision.edit) == (route, EDIT)


@pytest.mark.parametrize("min_confidence", [0.0, 0.5])
def test_when_the_model_abstains_the_base_model_answers_as_out_of_scope(min_confidence: float) -> None:
    probe = JudgeProbe(0.99, abstains=True)
    decision = router(probe, min_confidence=min_confidence).decide(Query("ns", QUERY))
    assert (decision.route, decision.edit, decision.score, decision.abstained) == (Route.BASE, None, 0.9, True)
    assert probe.asked == [(EDIT, QUERY, min_confidence > 0)]  # the confidence is read only when a rule uses it


def test_forced_routes_and_out_of_scope_queries_never_ask_the_model() -> None:
    probe = JudgeProbe(0.0, abstains=True)
    r = router(probe)
    assert r.decide(Query("ns", QUERY, route=Route.IKE)).route is Route.IKE
    assert r.decide(Query("ns", QUERY, route=Route.COUNTERFACTUAL)).route is Route.COUNTERFACTUAL  # however unsure
    assert router(probe, gate_score=0.1).decide(Query("ns", QUERY)).route is Route.BASE
    assert router(probe, baked=True).decide(Query("ns", QUERY)).route is Route.PARAMETRIC
    assert probe.asked == []


def test_a_confidence_rule_without_its_fallback_route_is_refused() -> None:
    memory = FixedMemory([])
    with pytest.raises(ValueError, match="ike"):
        Router(scope=ScopeCheck(HashEmbedder(16), memory, FixedGate(), 1), memory=memory,
               generators={r: RecordingGenerator(r) for r in (Route.BASE, Route.COUNTERFACTUAL)},
               in_scope_route=Route.COUNTERFACTUAL, threshold=0.5, judge=JudgeProbe(1.0))


@pytest.mark.parametrize(("configured", "available", "expected"), [
    ("counterfactual", {Route.COUNTERFACTUAL, Route.IKE, Route.PROMPT}, (Route.COUNTERFACTUAL, Route.IKE)),
    ("counterfactual", {Route.IKE, Route.PROMPT}, (Route.IKE, Route.IKE)),  # no adapter for this model
    ("counterfactual", {Route.PROMPT}, (Route.PROMPT, Route.PROMPT)),
    ("counterfactual", {Route.COUNTERFACTUAL, Route.PROMPT}, (Route.COUNTERFACTUAL, Route.PROMPT)),
    ("ike", {Route.COUNTERFACTUAL, Route.IKE, Route.PROMPT}, (Route.IKE, Route.IKE)),
    ("prompt", {Route.COUNTERFACTUAL, Route.IKE, Route.PROMPT}, (Route.PROMPT, Route.IKE)),
])
def test_in_scope_route_is_the_configured_one_or_the_next_the_server_has(
    configured: str, available: set[Route], expected: tuple[Route, Route]
) -> None:
    assert in_scope_routes(configured, {Route.BASE, *available}) == expected
