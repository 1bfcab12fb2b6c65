"""Several edits per answer (issue 24 item 2): the facts an in-scope answer reads after the edit that answers
(`Router.related`), how the routes that state facts write them, and a multi-hop step that reads them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from server.generators.counterfactual import CounterfactualGenerator, prefill_key
from server.generators.counterfactual_adapter import PromptFormat
from server.generators.decoding import CausalLM
from server.generators.ike import DemonstrationPool, IKEGenerator
from server.generators.prompted import prompt_with_edit
from server.interfaces import StopCheck, TextSink
from server.memory.store import EditStore
from server.multihop import ChainAnswer, Hop, RouterSteps
from server.router import Router
from server.scope import ScopeCheck
from server.types import (
    Edit,
    EditKind,
    EditSpec,
    FinishReason,
    Generation,
    GenerationOptions,
    Hit,
    Judgement,
    Query,
    Route,
    TokenScores,
)
from tests.tiny import build_tiny_model, build_tiny_tokenizer
from tests.unit.fakes import FixedGate, FixedMemory, HashEmbedder, RecordingGenerator, make_edit

pytest_plugins = ("tests.postgres",)

CITIZEN = make_edit("a" * 32, prompt="Ellie Kemper is a citizen of", target_new="Croatia", subject="Ellie Kemper")
HEAD = make_edit("b" * 32, prompt="The head of state of Croatia is", target_new="Ivo Josipovic", subject="Croatia")
BORN = make_edit("c" * 32, prompt="Ellie Kemper was born in", target_new="Split", subject="Ellie Kemper")
MAYOR = make_edit("d" * 32, prompt="The mayor of Split is", target_new="Ivo Sanader", subject="Split")
QUESTION = Query("ns", "Who is the head of state of the country Ellie Kemper is a citizen of?")
OPTIONS = GenerationOptions(max_new_tokens=4)


@dataclass
class Says:
    """A counterfactual model that answers every prompt with `text`."""

    text: str

    def generate(self, prompt: str, edit: Edit | None, options: GenerationOptions, on_text: TextSink | None = None,
                 should_stop: StopCheck | None = None, related: Sequence[Edit] = ()) -> Generation:
        return Generation(self.text, (), FinishReason.STOP)

    def score(self, prompt: str, edit: Edit | None, target: str, related: Sequence[Edit] = ()) -> TokenScores:
        raise NotImplementedError


def router(found: Sequence[tuple[Edit, float]], others: Sequence[Edit] = (), max_facts: int = 4,
           hidden: Sequence[Edit] = (), by_object: Sequence[Edit] = (), says: str | None = None
           ) -> tuple[Router, list[tuple[Edit, ...]]]:
    """A router whose search returns `found` with those gate scores (`by_object` among them found by their object);
    `others` only the store lists by subject. The list records the related facts of each judgement."""
    judged: list[tuple[Edit, ...]] = []

    def judge(edit: Edit, text: str, with_confidence: bool, related: Sequence[Edit] = ()) -> Judgement:
        judged.append(tuple(related))
        return Judgement(abstains=False, confidence=1.0)

    memory = FixedMemory([Hit(e, 0.5, by_object=e in by_object) for e, _ in found], others=list(others))
    gate = FixedGate({e.id: score for e, score in found})
    scope = ScopeCheck(HashEmbedder(16), memory, gate, 8, hidden=lambda e: e in hidden)
    generators = {r: RecordingGenerator(r) for r in (Route.BASE, Route.COUNTERFACTUAL, Route.IKE)}
    if says is not None:
        generators[Route.COUNTERFACTUAL] = Says(says)  # type: ignore[assignment]
    return Router(scope=scope, memory=memory, generators=generators, in_scope_route=Route.COUNTERFACTUAL,
                  threshold=0.5, judge=judge, max_facts=max_facts), judged


def test_an_edit_about_the_answering_edits_new_object_is_read_after_it() -> None:
    r, judged = router([(CITIZEN, 0.9)], others=[HEAD])
    decision = r.decide(QUESTION)
    assert (decision.route, decision.edit, decision.related) == (Route.COUNTERFACTUAL, CITIZEN, (HEAD,))
    assert judged == [(HEAD,)]  # the judgement reads the prompt the answer will read
    r.generate(QUESTION, decision, OPTIONS)
    r.score(QUESTION, decision, " Ivo")
    generator = r.generators[Route.COUNTERFACTUAL]
    assert isinstance(generator, RecordingGenerator) and generator.related == [(HEAD,), (HEAD,)]


def test_one_fact_alone_when_max_facts_is_one() -> None:
    r, judged = router([(CITIZEN, 0.9)], others=[HEAD], max_facts=1)
    assert r.decide(QUESTION).related == () and judged == [()]


def test_other_edits_the_gate_let_in_come_first_then_the_chains_breadth_first_up_to_max_facts() -> None:
    found = [(CITIZEN, 0.9), (BORN, 0.7), (HEAD, 0.2)]  # HEAD retrieved but out of scope: read only as a chain link
    assert router(found, others=[MAYOR])[0].decide(QUESTION).related == (BORN, HEAD, MAYOR)
    assert router(found, others=[MAYOR], max_facts=3)[0].decide(QUESTION).related == (BORN, HEAD)
    assert router(found, others=[MAYOR], max_facts=2)[0].decide(QUESTION).related == (BORN,)


def test_where_an_object_has_more_edits_than_room_those_closest_to_the_question_are_read() -> None:
    capital = make_edit("1" * 32, prompt="The capital of Croatia is", target_new="Split", subject="Croatia")
    anthem = make_edit("2" * 32, prompt="The anthem of Croatia is", target_new="Lijepa", subject="Croatia")
    others = [capital, anthem, HEAD]  # the store lists them oldest first: HEAD last
    assert router([(CITIZEN, 0.9)], others=others, max_facts=2)[0].decide(QUESTION).related == (HEAD,)
    capital_question = Query("ns", "What is the capital of the country Ellie Kemper is a citizen of?")
    assert router([(CITIZEN, 0.9)], others=others, max_facts=2)[0].decide(capital_question).related == (capital,)
    assert router([(CITIZEN, 0.9)], others=others)[0].decide(QUESTION).related == (capital, anthem, HEAD)  # room


def test_edits_the_gate_let_in_are_read_in_its_order_past_those_that_state_no_fact() -> None:
    erased = replace(HEAD, id="7" * 32, kind=EditKind.ERASE)
    found = [(CITIZEN, 0.9), (erased, 0.8), (BORN, 0.7), (MAYOR, 0.6)]
    assert router(found, max_facts=2)[0].decide(QUESTION).related == (BORN,)


def test_a_fact_stated_by_several_edits_is_read_once() -> None:
    twin = replace(HEAD, id="9" * 32)  # the same fact, kept side by side (added without supersede)
    assert router([(CITIZEN, 0.9), (replace(CITIZEN, id="8" * 32), 0.9)], others=[HEAD, twin])[0].decide(
        QUESTION).related == (HEAD,)


def test_a_chain_that_comes_back_to_a_read_fact_ends() -> None:
    back = make_edit("e" * 32, prompt="The most famous citizen of Croatia is", target_new="Ellie Kemper",
                     subject="Croatia")
    assert router([(CITIZEN, 0.9)], others=[back])[0].decide(QUESTION).related == (back,)


def test_only_facts_the_gate_can_see_are_read() -> None:
    erased = replace(HEAD, id="f" * 32, kind=EditKind.ERASE)
    rule = replace(BORN, kind=EditKind.PATCH)
    regex = replace(MAYOR, kind=EditKind.REGEX)
    r, _ = router([(CITIZEN, 0.9), (rule, 0.8)], others=[erased, regex])
    assert r.decide(QUESTION).related == ()
    r, _ = router([(CITIZEN, 0.9)], others=[HEAD], hidden=[HEAD])  # baked into the weights, out of the gate
    assert r.decide(QUESTION).related == ()
    r, _ = router([(CITIZEN, 0.9), (BORN, 0.8)], by_object=[BORN])  # the object gate's hit asks it backwards
    assert r.decide(QUESTION).related == ()


@pytest.mark.parametrize("route", [Route.IKE, Route.BASE])
def test_forced_routes_and_out_of_scope_answers_read_no_related_facts(route: Route) -> None:
    r, _ = router([(CITIZEN, 0.9)], others=[HEAD])
    assert r.decide(replace(QUESTION, route=route)).related == ()
    r, _ = router([(CITIZEN, 0.3)], others=[HEAD])
    assert r.decide(QUESTION).related == ()


def test_an_erase_edit_answers_with_its_refusal_alone() -> None:
    r, _ = router([(replace(CITIZEN, kind=EditKind.ERASE), 0.9)], others=[HEAD])
    assert r.decide(QUESTION).related == ()


def test_the_routes_that_state_facts_write_the_related_ones_after_the_edits() -> None:
    assert prompt_with_edit(CITIZEN, "q", [HEAD]) == (
        "New fact: Ellie Kemper is a citizen of Croatia. The head of state of Croatia is Ivo Josipovic.\nq")
    generator = CounterfactualGenerator(CausalLM(build_tiny_model(), build_tiny_tokenizer()),  # type: ignore[arg-type]
                                        PromptFormat())
    assert generator.prompt_for(CITIZEN, "q", [HEAD]) == (
        "Fact: Ellie Kemper is a citizen of Croatia. The head of state of Croatia is Ivo Josipovic.\nQ: q\nA:")
    assert generator.prompt_for(CITIZEN, "q") == PromptFormat().render(CITIZEN.prompt, CITIZEN.target_new, "q")
    # A judgement's prompt cache is kept for the same facts only: another set of facts is another prompt.
    assert prefill_key(CITIZEN, "q", [HEAD]) != prefill_key(CITIZEN, "q", [])
    assert prefill_key(CITIZEN, "q", [HEAD]) != prefill_key(CITIZEN, "q", [replace(HEAD, version=2)])


def test_a_multi_hop_step_that_reads_related_facts_asks_the_model_with_all_of_them() -> None:
    r, _ = router([(CITIZEN, 0.9)], others=[HEAD])
    hop = RouterSteps(r, OPTIONS).answer("ns", QUESTION.text)
    assert (hop.route, hop.edit, hop.related) == (Route.COUNTERFACTUAL, CITIZEN, (HEAD,))
    generator = r.generators[Route.COUNTERFACTUAL]
    assert isinstance(generator, RecordingGenerator) and generator.related == [(HEAD,)]  # the model read both facts
    assert hop.answer == CITIZEN.target_new  # its text ("counterfactual:…") names no fact: the edit's own object
    lone, _ = router([(CITIZEN, 0.9)])
    assert RouterSteps(lone, OPTIONS).answer("ns", QUESTION.text).answer == CITIZEN.target_new


def test_ike_writes_the_related_facts_as_sentences_after_the_edits(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    record = {"prompt": "Ada is a citizen of", "target_new": "Peru", "subject": "Ada",
              "rephrase_prompt": "Ada holds a passport from", "locality_prompt": "Bob is a citizen of",
              "locality_ground_truth": "France"}
    path.write_text(json.dumps([record]))
    embedder = HashEmbedder(dim=64)
    generator = IKEGenerator(None, DemonstrationPool.load(path, embedder, "hash", tmp_path), embedder, 1)  # type: ignore[arg-type]
    assert generator.prompt_for(CITIZEN, "q", [HEAD]).endswith(
        "New Fact: Ellie Kemper is a citizen of Croatia. The head of state of Croatia is Ivo Josipovic.\nPrompt: q")
    assert generator.prompt_for(CITIZEN, "q").endswith("New Fact: Ellie Kemper is a citizen of Croatia\nPrompt: q")


@pytest.mark.parametrize(("says", "answer"), [
    (" Ivo Josipovic, since 2010\n", "Ivo Josipovic"),  # the related fact's object, exactly as stored
    (" croatia.\n", "Croatia"),  # the answering edit's: a one-hop step still takes its edit's object exactly
    (" Zagreb. It is\n", "Croatia"),  # names no fact: the answering edit's object, not the model's free text
    (' "Ivo Josipovic" is\n', "Ivo Josipovic"),  # quoted
    (" Croatian president Ivo\n", "Croatia"),  # "Croatian" is not "Croatia": names none, the edit's own
])
def test_a_step_that_read_several_facts_takes_the_object_its_answer_names(says: str, answer: str) -> None:
    r, _ = router([(CITIZEN, 0.9)], others=[HEAD], says=says)
    hop = RouterSteps(r, OPTIONS).answer("ns", QUESTION.text)
    assert (hop.answer, hop.edit, hop.related) == (answer, CITIZEN, (HEAD,))


def test_an_edit_read_at_two_steps_is_listed_once_where_first_used() -> None:
    chain = ChainAnswer("q", ("a", "b"), (Hop("a", "Croatia", Route.COUNTERFACTUAL, CITIZEN, (HEAD,)),
                                          Hop("b", "Ivo Josipovic", Route.COUNTERFACTUAL, HEAD)))
    assert chain.edits_used == (CITIZEN.id, HEAD.id)


def test_the_store_lists_the_live_facts_about_a_subject_as_a_query_reads_them(
    store_on_each_backend: EditStore,
) -> None:
    store = store_on_each_backend
    specs = [EditSpec("Croatia", "The head of state of Croatia is", "Ivo Josipovic"),
             EditSpec("croatia ", "The capital of Croatia is", "Split"),
             EditSpec("Croatia", "", "", kind=EditKind.REGEX, pattern="Croatia", replacement="Hrvatska"),
             EditSpec("Slovenia", "The capital of Slovenia is", "Maribor")]
    vectors = [np.eye(8, dtype=np.float32)[: 0 if s.kind is EditKind.REGEX else 1] for s in specs]
    edits, _ = store.insert("ns", specs, vectors)
    assert [e.id for e in store.live_about("ns", " CROATIA")] == [edits[0].id, edits[1].id]  # oldest first
    assert store.live_about("other", "Croatia") == [] and store.live_about("ns", "Serbia") == []
    store.delete("ns", edits[0].id)
    assert [e.id for e in store.live_about("ns", "Croatia")] == [edits[1].id]


def test_a_step_whose_edit_was_found_by_its_object_is_not_answered_with_that_object() -> None:
    """With the reverse route off, "Who is a citizen of Croatia?" finds CITIZEN by its object; the facts about Croatia
    are read too, and the answer is the model's, never "Croatia", the name the step asks about."""
    r, _ = router([(CITIZEN, 0.9)], others=[HEAD], by_object=[CITIZEN], says=" Ellie Kemper\n")
    hop = RouterSteps(r, OPTIONS).answer("ns", "Who is a citizen of Croatia?")
    assert (hop.edit, hop.related, hop.answer) == (CITIZEN, (HEAD,), "Ellie Kemper")
