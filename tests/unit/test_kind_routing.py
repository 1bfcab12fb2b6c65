"""How each edit kind is answered: erase edits with the refusal, patches from their rule, and every answer of a
namespace (any route, streamed or whole) through its regex patches, and no other namespace's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import pytest

from server.generators.counterfactual_adapter import PromptFormat
from server.generators.prompted import prompt_with_edit
from server.generators.stated import refusal_generator
from server.router import Router
from server.scope import ScopeCheck
from server.types import Edit, EditKind, FinishReason, GenerationOptions, Hit, Judgement, Query, Route
from tests.tiny import EOS_ID, build_tiny_tokenizer
from tests.unit.fakes import FixedGate, FixedMemory, HashEmbedder, RecordingGenerator, make_edit

REFUSAL = "i do not know ."
WORDS = ("the", "capital", "of", "france", "is", "paris", "rome", "i", "do", "not", "know", ".", "lyon")
TOKENIZER = build_tiny_tokenizer(WORDS)
OPTIONS = GenerationOptions(max_new_tokens=8)
QUERY = Query("ns", "the capital of france is")

ERASE = replace(make_edit("e" * 32, prompt="the capital of france is", target_new=""), kind=EditKind.ERASE,
                target_true="paris")
MODIFY = make_edit("m" * 32, prompt="the capital of france is", target_new="rome")
PATCH = replace(make_edit("p" * 32, prompt="If asked for the capital of france, say lyon.", target_new=""),
                kind=EditKind.PATCH)


def regex_patch(edit_id: str, pattern: str, replacement: str, namespace: str = "ns") -> Edit:
    return Edit(edit_id, namespace, "", "", "", None, (), 1.0, kind=EditKind.REGEX, pattern=pattern,
                replacement=replacement)


class Parts:
    def __init__(self, edit: Edit, gate_score: float = 0.9, patches: tuple[Edit, ...] = ()) -> None:
        self.memory = FixedMemory([Hit(edit, 0.9)], others=list(patches))
        self.generators = {r: RecordingGenerator(r) for r in (Route.BASE, Route.PROMPT, Route.IKE)}
        self.router = Router(
            scope=ScopeCheck(HashEmbedder(16), self.memory, FixedGate({edit.id: gate_score}), 4), memory=self.memory,
            generators=self.generators, in_scope_route=Route.PROMPT, threshold=0.5,
            refusal=refusal_generator(TOKENIZER, REFUSAL),
        )

    def answer(self, query: Query, options: GenerationOptions = OPTIONS) -> tuple[str, list[str], Route, FinishReason]:
        pieces: list[str] = []
        decision = self.router.decide(query)
        generation = self.router.generate(query, decision, options, on_text=pieces.append)
        return generation.text, pieces, decision.route, generation.finish_reason


def test_an_in_scope_query_on_an_erase_edit_gets_the_refusal_on_the_in_scope_route() -> None:
    parts = Parts(ERASE)
    decision = parts.router.decide(QUERY)
    assert (decision.route, decision.edit) == (Route.PROMPT, ERASE)  # the answer names the erase edit
    generation = parts.router.generate(QUERY, decision, OPTIONS)
    assert generation.text == f" {REFUSAL}" and generation.finish_reason is FinishReason.EOS
    assert generation.token_ids == tuple(TOKENIZER(REFUSAL, add_special_tokens=False)["input_ids"])
    assert all(g.requests == [] for g in parts.generators.values())  # no model ran


def test_the_counterfactual_models_judgement_is_not_asked_about_an_erase_edit() -> None:
    memory = FixedMemory([Hit(ERASE, 0.9)])
    asked: list[Edit] = []

    def judge(edit: Edit, text: str, with_confidence: bool, related: Sequence[Edit] = ()) -> Judgement:
        asked.append(edit)
        return Judgement(abstains=True, confidence=1.0)

    router = Router(
        scope=ScopeCheck(HashEmbedder(16), memory, FixedGate({ERASE.id: 0.9}), 4), memory=memory,
        generators={r: RecordingGenerator(r) for r in (Route.BASE, Route.COUNTERFACTUAL, Route.IKE)},
        in_scope_route=Route.COUNTERFACTUAL, threshold=0.5, judge=judge, refusal=refusal_generator(TOKENIZER, REFUSAL),
    )
    decision = router.decide(QUERY)
    assert (decision.route, decision.edit, asked) == (Route.COUNTERFACTUAL, ERASE, [])
    assert router.generate(QUERY, decision, OPTIONS).text == f" {REFUSAL}"


def test_the_refusal_streams_and_keeps_to_the_token_limit_and_stop_strings() -> None:
    parts = Parts(ERASE)
    text, pieces, _, finish = parts.answer(QUERY)
    assert "".join(pieces) == text == f" {REFUSAL}" and finish is FinishReason.EOS
    text, _, _, finish = parts.answer(QUERY, GenerationOptions(max_new_tokens=2))
    assert (text, finish) == ("i do", FinishReason.LENGTH)
    text, _, _, finish = parts.answer(QUERY, GenerationOptions(max_new_tokens=8, stop=("not",)))
    assert (text, finish) == (" i do not", FinishReason.STOP)


def test_out_of_scope_queries_in_a_namespace_with_an_erase_edit_are_the_base_models() -> None:
    text, _, route, _ = Parts(ERASE, gate_score=0.1).answer(QUERY)
    assert (text, route) == (f"base:{QUERY.text}", Route.BASE)


def test_a_forced_in_scope_route_on_an_erase_edit_refuses_too() -> None:
    parts = Parts(ERASE)
    for route in (Route.IKE, Route.PROMPT):
        query = Query("ns", QUERY.text, route, ERASE.id)
        decision = parts.router.decide(query)
        assert parts.router.generate(query, decision, OPTIONS).text == f" {REFUSAL}"
    base = Query("ns", QUERY.text, Route.BASE)
    assert parts.router.generate(base, parts.router.decide(base), OPTIONS).text == f"base:{QUERY.text}"


def test_teacher_forcing_an_erase_edit_sees_the_refusal_and_nothing_else() -> None:
    parts = Parts(ERASE)
    decision = parts.router.decide(QUERY)
    refusal_ids = tuple(TOKENIZER(REFUSAL, add_special_tokens=False)["input_ids"])
    scores = parts.router.score(QUERY, decision, REFUSAL)
    assert scores.predicted_ids == scores.target_ids == refusal_ids and set(scores.target_logprobs) == {0.0}
    scores = parts.router.score(QUERY, decision, "paris")
    assert scores.predicted_ids == (refusal_ids[0],) and scores.target_logprobs == (-math.inf,)
    scores = parts.router.score(QUERY, decision, "i do know")  # agrees for two tokens, then not
    assert scores.predicted_ids[:2] == refusal_ids[:2] and scores.predicted_ids[2] == refusal_ids[2]
    assert scores.target_logprobs[:2] == (0.0, 0.0) and scores.target_logprobs[2] == -math.inf
    scores = parts.router.score(QUERY, decision, "i paris know")  # off the refusal: EOS from there on
    assert scores.predicted_ids[2] == EOS_ID


def test_a_patch_is_answered_by_the_in_scope_route_from_its_rule() -> None:
    parts = Parts(PATCH)
    _, _, route, _ = parts.answer(QUERY)
    assert route is Route.PROMPT and parts.generators[Route.PROMPT].requests[0][1] == PATCH
    assert prompt_with_edit(PATCH, QUERY.text) == f"New fact: {PATCH.prompt}\n{QUERY.text}"
    assert PromptFormat().render_statement(PATCH.statement(), QUERY.text) == (
        f"Fact: {PATCH.prompt}\nQ: {QUERY.text}\nA:")


@pytest.mark.parametrize("gate_score", [0.1, 0.9])  # base and in-scope routes alike
def test_regex_patches_rewrite_every_answer_of_their_namespace_streamed_or_whole(gate_score: float) -> None:
    patches = (regex_patch("1" * 32, r"capital", "CAPITAL"), regex_patch("2" * 32, r"CAPITAL of", "seat of"))
    parts = Parts(MODIFY, gate_score=gate_score, patches=patches)
    text, pieces, route, _ = parts.answer(QUERY)
    assert route is (Route.BASE if gate_score < 0.5 else Route.PROMPT)
    assert text == f"{route.value}:the seat of france is"  # in order: the second patch reads the first's output
    assert "".join(pieces) == text


def test_a_regex_patch_of_another_namespace_changes_nothing() -> None:
    parts = Parts(MODIFY, gate_score=0.1, patches=(regex_patch("1" * 32, r"capital", "CAPITAL", namespace="other"),))
    text, pieces, _, _ = parts.answer(QUERY)
    assert text == "".join(pieces) == f"base:{QUERY.text}"


def test_regex_patches_rewrite_the_refusal_too() -> None:
    parts = Parts(ERASE, patches=(regex_patch("1" * 32, r"not know", "not remember"),))
    text, pieces, _, _ = parts.answer(QUERY)
    assert text == "".join(pieces) == " i do not remember ."
