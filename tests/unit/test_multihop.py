"""The chain follower (server/multihop.py): substitution of earlier answers, an edit's answer taken exactly where the
gate finds one, the base model's short answer where it does not, and the plan cut at max_hops."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from server.errors import Cancelled, InvalidArgument
from server.generators.base import BaseGenerator
from server.generators.decoding import CausalLM
from server.generators.stated import refusal_generator, reverse_generator
from server.interfaces import StopCheck
from server.multihop import (
    DEFAULT_DEMONSTRATIONS,
    ChainFollower,
    Demonstration,
    FewShotPlanner,
    GivenPlan,
    Hop,
    RouterSteps,
    as_question,
    base_prompt,
    check_plan,
    knowedit_demonstrations,
    load_demonstrations,
    parse_steps,
    save_demonstrations,
    short_answer,
    substitute,
)
from server.router import Router
from server.scope import ScopeCheck
from server.types import (
    Edit,
    EditKind,
    EncodedText,
    FinishReason,
    Generation,
    GenerationOptions,
    Hit,
    KeyEncodings,
    Route,
)
from tests.tiny import build_tiny_model, build_tiny_tokenizer
from tests.unit.fakes import FixedGate, FixedMemory, HashEmbedder, RecordingGenerator, make_edit

OPTIONS = GenerationOptions(max_new_tokens=4, stop=("\n",))
REFUSAL = "who is paris"  # the tiny tokenizer's words, so the refusal decodes as written
CAPITAL = make_edit("a" * 32, prompt="the capital of france is", target_new="rome", subject="france")
LANGUAGE = make_edit("b" * 32, prompt="the language of rome is", target_new="german", subject="rome")


@dataclass
class SubjectGate:
    """In scope exactly when the query names the edit's subject."""

    reads_objects = False

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        return [1.0 if h.edit.subject in query.text else 0.0 for h in hits]

    def warm(self, edits: Sequence[Edit], encoded: KeyEncodings | None = None) -> None:
        pass


@dataclass
class ScriptedSteps:
    """Answers step i with answers[i], recording what it was asked."""

    answers: list[str]
    asked: list[str] = field(default_factory=list)

    def answer(self, namespace: str, question: str, should_stop: StopCheck | None = None) -> Hop:
        self.asked.append(question)
        return Hop(question, self.answers[len(self.asked) - 1], Route.BASE, None)


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    return CausalLM(build_tiny_model(), build_tiny_tokenizer())  # type: ignore[arg-type]


def follower(edits: Sequence[Edit], lm: CausalLM, plan: Sequence[str], others: Sequence[Edit] = ()) -> ChainFollower:
    """`edits` found by the gate when a step names their subject; `others` never found (regex patches)."""
    memory = FixedMemory([Hit(e, 0.9) for e in edits], others=list(others))
    base = BaseGenerator(lm)
    router = Router(scope=ScopeCheck(HashEmbedder(dim=16), memory, SubjectGate(), top_k=4), memory=memory,
                    generators={Route.BASE: base, Route.PROMPT: RecordingGenerator(Route.PROMPT)},
                    in_scope_route=Route.PROMPT, threshold=0.5, refusal=refusal_generator(lm.tokenizer, REFUSAL))
    return ChainFollower(GivenPlan(tuple(plan)), RouterSteps(router, OPTIONS))


def test_substitute_fills_answered_steps_and_leaves_the_rest() -> None:
    assert substitute("the capital of #1 is", ["france"]) == "the capital of france is"
    assert substitute("#2 of #1", ["a", "b"]) == "b of a"
    assert substitute("the language of #2 is", ["rome"]) == "the language of #2 is"  # not answered yet


def test_a_chain_of_edits_is_followed_exactly_with_each_answer_substituted(lm: CausalLM) -> None:
    chain = follower([CAPITAL, LANGUAGE], lm, ["the capital of france is", "the language of #1 is"]).follow(
        "ns", "what language is spoken in the capital of france")
    assert [h.question for h in chain.hops] == ["the capital of france is", "the language of rome is"]
    assert [h.answer for h in chain.hops] == ["rome", "german"]  # the edits' targets, not a model's rendering
    assert [h.route for h in chain.hops] == [Route.PROMPT, Route.PROMPT]
    assert chain.answer == "german"
    assert chain.edits_used == (CAPITAL.id, LANGUAGE.id)


def test_a_step_no_edit_answers_goes_to_the_base_model(lm: CausalLM) -> None:
    chain = follower([CAPITAL], lm, ["the capital of france is", "the language of #1 is"]).follow("ns", "q")
    last = chain.hops[-1]
    assert (last.route, last.edit) == (Route.BASE, None)
    expected = short_answer(lm.decode(base_prompt("the language of rome is"), OPTIONS).text)
    assert last.answer == expected
    assert chain.edits_used == (CAPITAL.id,)


def test_a_step_naming_an_edits_object_is_answered_by_the_in_scope_route_not_with_the_edits_target(
    lm: CausalLM,
) -> None:
    """A reverse question ("which country has rome as its capital") finds the edit by its object; the answer is the
    edit read by the in-scope route, not its target, which is the very entity the step names."""
    memory = FixedMemory([Hit(CAPITAL, 0.0, by_object=True)])
    generator = RecordingGenerator(Route.PROMPT)
    router = Router(scope=ScopeCheck(HashEmbedder(dim=16), memory, FixedGate({CAPITAL.id: 1.0}), top_k=4),
                    memory=memory, generators={Route.BASE: BaseGenerator(lm), Route.PROMPT: generator},
                    in_scope_route=Route.PROMPT, threshold=0.5)
    hop = RouterSteps(router, OPTIONS).answer("ns", "which country has rome as its capital")
    assert (hop.route, hop.edit) == (Route.PROMPT, CAPITAL)
    assert hop.answer == "prompt:which country has rome as its capital" != CAPITAL.target_new
    assert generator.requests[0][:2] == ("which country has rome as its capital", CAPITAL)


def test_a_step_naming_an_edits_object_is_answered_by_its_subject_where_the_reverse_route_is_served(
    lm: CausalLM,
) -> None:
    memory = FixedMemory([Hit(CAPITAL, 0.0, by_object=True)])
    router = Router(scope=ScopeCheck(HashEmbedder(dim=16), memory, FixedGate({CAPITAL.id: 1.0}), top_k=4),
                    memory=memory, generators={Route.BASE: BaseGenerator(lm), Route.PROMPT: RecordingGenerator(
                        Route.PROMPT), Route.REVERSE: reverse_generator(lm.tokenizer)},
                    in_scope_route=Route.PROMPT, threshold=0.5)
    hop = RouterSteps(router, OPTIONS).answer("ns", "which country has rome as its capital")
    assert (hop.answer, hop.route, hop.edit) == ("france", Route.REVERSE, CAPITAL)
    # exactly the subject, not a generated answer cut at its first full stop or its token limit
    louis = replace(CAPITAL, subject="st. louis of the united kingdom of great britain and northern ireland")
    memory.hits = [Hit(louis, 0.0, by_object=True)]
    assert RouterSteps(router, OPTIONS).answer("ns", "which country has rome as its capital").answer == louis.subject


def test_an_erased_fact_is_refused_and_ends_the_chain(lm: CausalLM) -> None:
    erased = replace(CAPITAL, kind=EditKind.ERASE, target_new="")
    chain = follower([erased, LANGUAGE], lm, ["the capital of france is", "the language of #1 is"]).follow("ns", "q")
    (hop,) = chain.hops  # not carried on: the erased fact must not be reached through the next step either
    assert (hop.answer, hop.route, hop.edit, hop.final) == (REFUSAL, Route.PROMPT, erased, True)


def test_the_base_models_steps_go_through_the_namespaces_regex_patches(lm: CausalLM) -> None:
    redact = replace(make_edit("c" * 32, prompt="", target_new="", subject=""), kind=EditKind.REGEX,
                     pattern=r"(?s).+", replacement="redacted")
    chain = follower([CAPITAL], lm, ["the capital of france is", "the language of #1 is"], others=[redact]).follow(
        "ns", "q")
    assert [(h.answer, h.route) for h in chain.hops] == [("rome", Route.PROMPT), ("redacted", Route.BASE)]


def test_a_caller_gone_stops_the_chain_between_steps() -> None:
    steps = ScriptedSteps(["a", "b"])
    with pytest.raises(Cancelled, match="after 1 of 2 steps"):
        ChainFollower(GivenPlan(("s1", "s2 #1")), steps).follow("ns", "q", should_stop=lambda: bool(steps.asked))
    assert steps.asked == ["s1"]


def test_a_step_too_long_once_filled_in_is_refused() -> None:
    steps = ScriptedSteps(["x" * 10])
    with pytest.raises(InvalidArgument, match=r"steps\[1\] has 25 characters once earlier answers are filled in"):
        ChainFollower(GivenPlan(("s1", "#1 and #1")), steps, max_step_chars=20).follow("ns", "q")


def test_the_plan_is_cut_at_max_hops() -> None:
    steps = ScriptedSteps(["a", "b", "c"])
    chain = ChainFollower(GivenPlan(("s1", "s2 #1", "s3 #2")), steps, max_hops=2).follow("ns", "q")
    assert chain.plan == ("s1", "s2 #1")
    assert steps.asked == ["s1", "s2 a"]
    assert chain.answer == "b"


def test_an_empty_answer_ends_the_chain() -> None:
    steps = ScriptedSteps(["", "b"])
    chain = ChainFollower(GivenPlan(("s1", "s2 #1")), steps).follow("ns", "q")
    assert steps.asked == ["s1"] and chain.answer == ""


def test_max_hops_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_hops"):
        ChainFollower(GivenPlan(()), ScriptedSteps([]), max_hops=0)


def test_parse_steps_takes_consecutive_steps_from_one() -> None:
    text = "Step 1: a\nStep 2: b #1\nStep 4: skipped #3\nStep 3: c #2"
    assert parse_steps(text, 4) == ["a", "b #1"]
    assert parse_steps("Step 1: a\nStep 2: b #1\nStep 3: c #2", 2) == ["a", "b #1"]
    assert parse_steps("Answer: a", 4) == []


def test_parse_steps_ends_the_plan_where_the_chain_breaks() -> None:
    assert parse_steps("Step 1: the mayor of #1 is", 4) == []  # refers to a step not yet answered
    assert parse_steps("Step 1: a\nStep 2: a", 4) == ["a"]  # repeats itself
    assert parse_steps("Step 1: a\nStep 2: b", 4) == ["a"]  # does not use step 1's answer
    assert parse_steps("Step 1: a\nStep 2: b #1\nStep 3: c #1", 4) == ["a", "b #1"]  # skips step 2's


def test_a_question_the_planner_cannot_split_is_asked_whole() -> None:
    steps = ScriptedSteps(["rome"])
    chain = ChainFollower(GivenPlan(()), steps).follow("ns", "the capital of france is")
    assert chain.plan == ("the capital of france is",) and chain.answer == "rome"


def test_short_answer_cuts_to_the_first_line_and_sentence() -> None:
    assert short_answer(" Croatia. It is a country\nmore") == "Croatia"
    assert short_answer(" the U.S. of America,") == "the U.S. of America"
    assert short_answer(" Kansas City, Missouri") == "Kansas City, Missouri"


def test_base_prompt_frames_questions_and_keeps_clozes() -> None:
    assert base_prompt("Who is CM Punk married to?") == "Q: Who is CM Punk married to?\nA:"
    assert base_prompt("CM Punk is married to") == "CM Punk is married to"


@dataclass(frozen=True)
class WrittenText:
    """A stand-in for the planner's model: continues every prompt with the same text, recording the prompts."""

    text: str
    prompts: list[str] = field(default_factory=list)

    def decode(self, prompt: str, options: GenerationOptions, should_stop: StopCheck | None = None) -> Generation:
        self.prompts.append(prompt)
        return Generation(self.text, (), FinishReason.STOP)


def test_the_planner_shows_its_demonstrations_and_reads_the_steps_written() -> None:
    shot = Demonstration("The capital of the country of X is", ("The country of X is", "The capital of #1 is"))
    model = WrittenText(" The country of Y is\nStep 2: The mayor of #1 is\nQuestion: next")
    planner = FewShotPlanner(model, (shot,))  # type: ignore[arg-type]
    assert planner.plan("The mayor of the country of Y is") == ["The country of Y is", "The mayor of #1 is"]
    assert model.prompts[0].startswith(shot.render())
    assert model.prompts[0].endswith("\nQuestion: The mayor of the country of Y is\nStep 1:")


def test_knowedit_demonstrations_replace_the_edits_phrase_by_its_answer() -> None:
    records = [
        {"subject": "Lac Otelnuk", "prompt": "The name of the country which Lac Otelnuk is associated with is",
         "portability": {"Reasoning": [{"prompt": "The name of the capital city of the country Lac Otelnuk is "
                                                  "associated with is"}]}},
        {"subject": "Ray Wietecha", "prompt": "The place of death of Ray Wietecha is",
         "portability": {"Reasoning": [{"prompt": "The name of the head of government of the place of death of "
                                                  "Ray Wietecha is"}]}},
        # The edit's phrase does not occur in the portability prompt: no demonstration.
        {"subject": "Jose", "prompt": "The gender of Jose is",
         "portability": {"Reasoning": [{"prompt": "The gender of the author of a paper is"}]}},
    ]
    demos = knowedit_demonstrations(records, k=5)
    assert [d.steps for d in demos] == [
        ("The name of the country which Lac Otelnuk is associated with is", "The name of the capital city of #1 is"),
        ("The place of death of Ray Wietecha is", "The name of the head of government of #1 is"),
    ]
    assert len(knowedit_demonstrations(records, k=1)) == 1


def test_check_plan_accepts_references_to_earlier_steps_only() -> None:
    check_plan(("The Space Needle is in", "#1 is the capital of", "The head of #2 and of #1 is"), max_hops=4)
    with pytest.raises(InvalidArgument, match=r"steps\[0\] refers to #1"):
        check_plan(("#1 is the capital of",), max_hops=4)
    with pytest.raises(InvalidArgument, match=r"steps\[1\] refers to #2"):
        check_plan(("a", "the capital of #2"), max_hops=4)
    with pytest.raises(InvalidArgument, match="steps has 3 entries; the limit is 2"):
        check_plan(("a", "b of #1", "c of #2"), max_hops=2)


def test_demonstrations_round_trip_through_their_file(tmp_path: Path) -> None:
    shots = (Demonstration("The capital of the country of X is", ("The country of X is", "The capital of #1 is")),)
    save_demonstrations(tmp_path / "shots.json", shots)
    assert load_demonstrations(tmp_path / "shots.json") == shots


def test_the_shipped_demonstrations_are_chains_the_parser_would_keep() -> None:
    shots = load_demonstrations(DEFAULT_DEMONSTRATIONS)
    assert len(shots) >= 2
    for shot in shots:
        assert parse_steps(shot.render().split("\n", 1)[1], max_steps=4) == list(shot.steps)


def test_as_question_asks_the_shots_question_and_keeps_its_steps() -> None:
    shot = Demonstration("The name of the mother of X is", ("The name of the mother of X is",))
    assert as_question(shot) == Demonstration("What is the name of the mother of X?", shot.steps)
    odd = Demonstration("Who founded X?", ("a",))
    assert as_question(odd) == odd  # not a "The ... is" cloze: kept as it is
