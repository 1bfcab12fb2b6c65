"""The reverse route (server/generators/stated.py): a query the gate found by an edit's new object is answered by the
edit's subject, without the counterfactual model's judgement; baked edits are still answered by the weights, and
without the route such a query takes the in-scope route."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from server.errors import FailedPrecondition
from server.generators.stated import refusal_generator, reverse_generator
from server.interfaces import Generator
from server.router import Router
from server.scope import ScopeCheck
from server.types import Edit, EditKind, FinishReason, GenerationOptions, Hit, Judgement, Query, Route
from tests.tiny import EOS_ID, build_tiny_tokenizer
from tests.unit.fakes import FixedGate, FixedMemory, HashEmbedder, RecordingGenerator, make_edit

WORDS = ("who", "is", "the", "son", "of", "wang", "chonghua", "jipeng", "father", "i", "do", "not", "know")
TOKENIZER = build_tiny_tokenizer(WORDS)
OPTIONS = GenerationOptions(max_new_tokens=8)
FATHER = make_edit("f" * 32, prompt="the father of wang jipeng is", target_new="wang chonghua", subject="wang jipeng")
QUERY = Query("ns", "who is the son of wang chonghua")


def router_for(edit: Edit, by_object: bool = True, score: float = 0.9, reverse: bool = True,
               baked: bool = False) -> tuple[Router, list[Edit]]:
    """A router whose gate finds `edit` (by its object) at `score`; the list records the edits judged."""
    judged: list[Edit] = []

    def judge(judged_edit: Edit, text: str, with_confidence: bool, related: Sequence[Edit] = ()) -> Judgement:
        judged.append(judged_edit)
        return Judgement(abstains=False, confidence=1.0)

    memory = FixedMemory([Hit(edit, 0.5, by_object=by_object)])
    generators: dict[Route, Generator] = {r: RecordingGenerator(r) for r in (Route.BASE, Route.COUNTERFACTUAL,
                                                                              Route.IKE, Route.PARAMETRIC)}
    if reverse:
        generators[Route.REVERSE] = reverse_generator(TOKENIZER)
    router = Router(scope=ScopeCheck(HashEmbedder(16), memory, FixedGate({edit.id: score}), 4), memory=memory,
                    generators=generators, in_scope_route=Route.COUNTERFACTUAL, threshold=0.5, judge=judge,
                    baked=lambda e: baked, refusal=refusal_generator(TOKENIZER, "i do not know"))
    return router, judged


def test_a_query_found_by_the_edits_object_is_answered_by_its_subject_without_the_judgement() -> None:
    router, judged = router_for(FATHER)
    decision = router.decide(QUERY)
    assert (decision.route, decision.edit, decision.by_object, judged) == (Route.REVERSE, FATHER, True, [])
    generation = router.generate(QUERY, decision, OPTIONS)
    assert (generation.text, generation.finish_reason) == (" wang jipeng", FinishReason.EOS)
    assert generation.token_ids == tuple(TOKENIZER(" wang jipeng", add_special_tokens=False)["input_ids"])
    # cut like a generated answer: by max_new_tokens, by a stop string
    first = router.generate(QUERY, decision, GenerationOptions(max_new_tokens=1))
    assert (first.text.strip(), first.token_ids, first.finish_reason) == (
        "wang", generation.token_ids[:1], FinishReason.LENGTH)
    stopped = router.generate(QUERY, decision, GenerationOptions(max_new_tokens=8, stop=(" jip",)))
    assert (stopped.text, stopped.finish_reason) == (" wang jip", FinishReason.STOP)  # up to the stop, as generated


def test_teacher_forced_scores_follow_the_subject_and_then_predict_the_end() -> None:
    router, _ = router_for(FATHER)
    decision = router.decide(QUERY)
    right = router.score(QUERY, decision, " wang jipeng")
    assert right.predicted_ids == right.target_ids and right.target_logprobs == (0.0, 0.0)
    wrong = router.score(QUERY, decision, " wang chonghua father")
    assert wrong.predicted_ids == (*right.target_ids, EOS_ID)  # the subject while the target agrees, then the end
    assert wrong.target_logprobs == (0.0, float("-inf"), float("-inf"))


def test_other_queries_keep_their_routes() -> None:
    assert router_for(FATHER, by_object=False)[0].decide(QUERY).route is Route.COUNTERFACTUAL  # found by subject
    assert router_for(FATHER, score=0.1)[0].decide(QUERY).route is Route.BASE  # under the threshold
    router, judged = router_for(FATHER, reverse=False)  # a server without the route: the in-scope route, judged
    assert (router.decide(QUERY).route, judged) == (Route.COUNTERFACTUAL, [FATHER])
    assert router_for(FATHER, baked=True)[0].decide(QUERY).route is Route.PARAMETRIC  # the weights answer


def test_the_route_forced_on_an_edit_without_a_subject_says_what_is_missing() -> None:
    patch = replace(FATHER, kind=EditKind.PATCH, subject="", prompt="if asked for a son, say jipeng", target_new="")
    router, _ = router_for(patch)
    decision = router.decide(Query("ns", "who is the son", route=Route.REVERSE, edit_id=patch.id))
    with pytest.raises(FailedPrecondition, match="edit's subject"):
        router.generate(QUERY, decision, OPTIONS)
