from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.chat.gating import decide_turn
from server.chat.transcript import Turn
from server.router import Router
from server.scope import ScopeCheck
from server.types import EncodedText, Hit, Route
from tests.unit.fakes import FixedMemory, HashEmbedder, RecordingGenerator, make_edit

NEEDLE = make_edit("a" * 32, prompt="The Space Needle is located in", target_new="Taipei", subject="Space Needle")


@dataclass
class SubjectGate:
    """In scope exactly when the query names the edit's subject."""

    reads_objects = False

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        return [1.0 if h.edit.subject.lower() in query.text.lower() else 0.0 for h in hits]


def router() -> Router:
    return Router(
        scope=ScopeCheck(HashEmbedder(dim=16), FixedMemory([Hit(NEEDLE, 0.5)]), SubjectGate(), top_k=4),
        memory=FixedMemory([Hit(NEEDLE, 0.5)]),
        generators={Route.BASE: RecordingGenerator(Route.BASE), Route.IKE: RecordingGenerator(Route.IKE)},
        in_scope_route=Route.IKE,
        threshold=0.5,
    )


def conversation(*contents: str) -> list[Turn]:
    return [Turn("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(contents)]


def test_the_latest_user_turn_is_gated_alone_first() -> None:
    turn = decide_turn(router(), "ns", conversation("Hello", "Hi!", "Where is the Space Needle?"))
    assert turn.decision.route is Route.IKE and turn.decision.edit == NEEDLE
    assert turn.gate_query == "Where is the Space Needle?"


def test_a_follow_up_that_refers_back_is_gated_with_the_previous_exchange() -> None:
    turns = conversation("Tell me about the Space Needle.", "It is a tower.", "Where is it?")
    turn = decide_turn(router(), "ns", turns)
    assert turn.decision.route is Route.IKE and turn.decision.edit == NEEDLE
    assert turn.gate_query == "Tell me about the Space Needle.\nIt is a tower.\nWhere is it?"


def test_an_unrelated_follow_up_stays_out_of_scope() -> None:
    turns = conversation("Where is the Space Needle?", "In Taipei.", "What is the capital of France?")
    turn = decide_turn(router(), "ns", turns)
    assert turn.decision.route is Route.BASE and turn.decision.edit is None
    assert turn.gate_query == "What is the capital of France?"


def test_context_is_not_used_when_the_route_is_forced_or_there_is_none() -> None:
    forced = decide_turn(router(), "ns", conversation("Tell me about the Space Needle.", "A tower.", "Where is it?"),
                         route=Route.BASE)
    assert forced.decision.route is Route.BASE
    first = decide_turn(router(), "ns", conversation("Where is it?"))
    assert first.decision.route is Route.BASE and first.gate_query == "Where is it?"
