from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from server.chat.correction_parsing import build_spec, parse_subject_line, parse_target
from server.chat.correction_prompts import EXAMPLES, Exchange, answer_prompt, cloze_prompt, subject_prompt
from server.chat.corrections import CorrectionExtractor, structured_spec
from server.errors import FailedPrecondition
from server.generators.base import BaseGenerator
from server.generators.decoding import CausalLM
from server.interfaces import StopCheck, TextSink
from server.types import Edit, EditSpec, FinishReason, Generation, GenerationOptions
from tests.tiny import build_tiny_model, build_tiny_tokenizer

QUESTION = "Where is the Space Needle?"
EXCHANGE = Exchange(QUESTION, "The Space Needle is located in the Pacific Ocean.")


@dataclass
class ScriptedModel:
    """Answers each prompt with the next scripted output, recording the prompts and options."""

    outputs: list[str]
    prompts: list[str] = field(default_factory=list)
    options: list[GenerationOptions] = field(default_factory=list)

    def generate(self, prompt: str, edit: Edit | None, options: GenerationOptions,
                 on_text: TextSink | None = None, should_stop: StopCheck | None = None,
                 related: Sequence[Edit] = ()) -> Generation:
        self.prompts.append(prompt)
        self.options.append(options)
        return Generation(self.outputs.pop(0) + "\n", (), FinishReason.STOP)


@pytest.mark.parametrize(
    ("output", "question", "subject", "cloze"),
    [
        (" Space Needle | The Space Needle is located in", QUESTION, "Space Needle", "The Space Needle is located in"),
        (" the space needle | the space needle is in", QUESTION, "Space Needle", "the Space Needle is in"),
        (" Yo-Yo Ma plays", "What instrument does Yo-Yo Ma play?", "Yo-Yo Ma", None),
        (" Japanese | The currency used in Japan is", "What currency does Japan use?", "Japan",
         "The currency used in Japan is"),
        (" Earth | Earth is", "Which planet is closest to the Sun?", "Sun", None),
        (" Tesla | Tesla is led by.", "Who runs Tesla?", "Tesla", "Tesla is led by"),
    ],
)
def test_the_subject_is_snapped_onto_the_words_of_the_question(
    output: str, question: str, subject: str, cloze: str | None
) -> None:
    assert parse_subject_line(output, question) == (subject, cloze)


@pytest.mark.parametrize("output", [" Elon Musk | Elon Musk is", " | ", " what | what is"])
def test_a_subject_not_in_the_question_is_failed_precondition(output: str) -> None:
    with pytest.raises(FailedPrecondition, match="could not tell what the question"):
        parse_subject_line(output, "Who is the boss of Tesla or SpaceX?")  # two names: no telling which


@pytest.mark.parametrize(
    ("output", "correction", "target"),
    [
        (" Taipei", "No, the Space Needle is in Taipei", "Taipei"),
        (" Taipei is in the Pacific Ocean", "No, the Space Needle is in Taipei", "Taipei"),  # snapped to the span
        (" The Space Needle is located in Taipei, not Seattle", "It's in Taipei, not Seattle", "Taipei"),
        (" taipei city.", "no!! it's Taipei City", "taipei city"),
        (" Mercury", "mercury", "Mercury"),  # as the model writes it
        (" Mercury", "No, Freddie Mercury sang", "Freddie Mercury"),  # the whole name the correction writes
        (" located in Taipei", "it is in Taipei", "Taipei"),  # the end of the cloze repeated
        (" Abuja", "Not Lagos, Abuja.", "Abuja"),
        (" painted by Vincent van Gogh", "It was painted by Vincent van Gogh.", "Vincent van Gogh"),  # lead-in
    ],
)
def test_the_target_is_a_span_of_the_correction_named_by_the_model(output: str, correction: str, target: str) -> None:
    found, problem = parse_target(output, correction, EXCHANGE, "Space Needle", "The Space Needle is located in")
    assert (found, problem) == (target, "")


def test_a_word_of_the_subject_can_be_the_answer_where_it_is_not_a_mention_of_the_subject() -> None:
    # The corrected answer mentions the subject; only what it said besides (Melbourne) is ruled out.
    opera = Exchange("Where is the Sydney Opera House?", "The Sydney Opera House is in Melbourne.")
    assert parse_target(" Sydney", "Obviously it is in Sydney.", opera, "Sydney Opera House", None) == ("Sydney", "")
    found, _ = parse_target(" Sydney", "The Sydney Opera House is in Canberra", opera, "Sydney Opera House", None)
    assert found is None


@pytest.mark.parametrize(
    ("output", "correction", "problem"),
    [
        (" (not given)", "No, that's not right at all", "no new answer given"),
        (" Seattle", "It is not Seattle.", "nothing in it names a new answer"),  # negated
        (" Seattle", "It isn't in Seattle, it's in Taipei", "does not say"),  # Seattle negated, Taipei not named
        (" Pacific Ocean", "the Pacific Ocean, yes, Portland", "does not say"),  # the answer being corrected
        (" Space Needle", "the Space Needle", "nothing in it names a new answer"),  # the subject
        (" Paris", "No, it is in Taipei", "does not say"),  # not in the correction
    ],
)
def test_targets_that_are_not_a_new_answer_are_refused(output: str, correction: str, problem: str) -> None:
    found, why = parse_target(output, correction, EXCHANGE, "Space Needle", None)
    assert found is None and problem in why


def test_the_edit_is_the_cloze_continued_by_the_target_with_the_question_as_a_paraphrase() -> None:
    spec = build_spec(QUESTION, "Space Needle", "The Space Needle is located in", "Taipei", lead="in")
    assert spec == EditSpec("Space Needle", "The Space Needle is located in", "Taipei", None, (QUESTION,))
    born = build_spec("Where was Albert Einstein born?", "Albert Einstein", "Albert Einstein was born", "Ulm", "in")
    assert (born.prompt, born.target_new) == ("Albert Einstein was born in", "Ulm")
    # A cloze that already holds the answer cannot be continued by it: the question is made a cloze instead.
    leaky = build_spec("What currency does Japan use?", "Japan", "Japan uses the yen", "yen")
    assert leaky.prompt == "What currency does Japan use? The answer is" and leaky.paraphrases == (
        "What currency does Japan use?",
    )


def test_a_structured_correction_gains_the_question_as_a_paraphrase_once() -> None:
    spec = EditSpec("Space Needle", "The Space Needle is in", "Taipei", paraphrases=("Where's the Space Needle?",))
    assert structured_spec(EXCHANGE, spec).paraphrases == ("Where's the Space Needle?", QUESTION)
    again = structured_spec(EXCHANGE, structured_spec(EXCHANGE, spec))
    assert again.paraphrases.count(QUESTION) == 1
    same = EditSpec("Space Needle", QUESTION, "Taipei")
    assert structured_spec(EXCHANGE, same).paraphrases == ()


def test_extraction_reads_subject_then_answer_greedily_and_briefly() -> None:
    model = ScriptedModel([" Space Needle | The Space Needle is located in", " Taipei"])
    extraction = CorrectionExtractor(model).extract(EXCHANGE, "No, the Space Needle is in Taipei")
    assert extraction.spec == EditSpec("Space Needle", "The Space Needle is located in", "Taipei", None, (QUESTION,))
    assert extraction.outputs == (" Space Needle | The Space Needle is located in", " Taipei")
    assert model.prompts[0] == subject_prompt(EXAMPLES, QUESTION)
    assert model.prompts[1] == answer_prompt(EXAMPLES, EXCHANGE, "No, the Space Needle is in Taipei")
    assert all(o.greedy and o.max_new_tokens <= 32 and o.stop == ("\n",) for o in model.options)


def test_when_the_answer_step_fails_the_cloze_is_continued_after_the_correction() -> None:
    model = ScriptedModel([" Space Needle | The Space Needle is located in", " Seattle", " Taipei."])
    extraction = CorrectionExtractor(model).extract(EXCHANGE, "No, the Space Needle is in Taipei")
    assert extraction.spec.target_new == "Taipei" and len(extraction.outputs) == 3
    assert model.prompts[2] == cloze_prompt(EXAMPLES, "No, the Space Needle is in Taipei",
                                            "The Space Needle is located in")


def test_when_no_step_finds_an_answer_the_error_says_what_is_missing() -> None:
    model = ScriptedModel([" Space Needle | The Space Needle is located in", " Seattle", " Seattle"])
    with pytest.raises(FailedPrecondition, match="could not find the right answer") as caught:
        CorrectionExtractor(model).extract(EXCHANGE, "No, the Space Needle is in taipei or somewhere")
    assert "'Seattle'" in str(caught.value)


def test_when_no_step_finds_an_answer_the_correction_s_only_name_is_taken() -> None:
    model = ScriptedModel([" Amazon | Amazon was founded by", " Amazon", " Larry Page"])
    exchange = Exchange("Who founded Amazon?", "Amazon was founded by Larry Page.")
    spec = CorrectionExtractor(model).extract(exchange, "Incorrect. Jeff Bezos founded Amazon.").spec
    assert (spec.subject, spec.prompt, spec.target_new) == ("Amazon", "Amazon was founded by", "Jeff Bezos")
    # Two names, or a name the correction negates, are no answer.
    for correction in ("Jeff Bezos or MacKenzie Scott founded it, not Larry Page", "It was not Jeff Bezos."):
        with pytest.raises(FailedPrecondition):
            CorrectionExtractor(ScriptedModel([" Amazon", " Amazon", " Amazon"])).extract(exchange, correction)


def test_a_correction_made_only_of_filler_is_refused_without_asking_the_model() -> None:
    model = ScriptedModel([])
    with pytest.raises(FailedPrecondition, match="does not say what the right answer is"):
        CorrectionExtractor(model).extract(EXCHANGE, "No, that's not right!")
    assert model.prompts == []


def test_the_few_shot_examples_are_valid_corrections() -> None:
    for e in EXAMPLES:
        assert e.subject in e.question and e.subject in e.cloze
        assert e.target is None or e.target.lower() in e.correction.lower()


def test_on_a_tiny_model_extraction_never_returns_an_invalid_edit() -> None:
    model = BaseGenerator(CausalLM(build_tiny_model(), build_tiny_tokenizer()))
    exchange = Exchange("where is the capital of france", "paris")
    for correction in ("no , it is rome", "the capital of france is berlin", "rome"):
        try:
            spec = CorrectionExtractor(model).extract(exchange, correction).spec
        except FailedPrecondition as exc:
            assert "send subject, prompt and target_new" in str(exc) or "say it plainly" in str(exc)
        else:
            assert spec.subject in exchange.question and spec.subject in spec.prompt
            assert spec.target_new.lower() in correction.lower()
