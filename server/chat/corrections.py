"""Corrections into edits: "No, the Space Needle is in Taipei" after "Where is the Space Needle?" becomes
{subject: Space Needle, prompt: The Space Needle is located in, target_new: Taipei,
 paraphrases: [Where is the Space Needle?]}.

Free text is read by the base model with few-shot prompts (greedy, a few tokens each), in steps small
enough for a 270M-parameter model: measured on Gemma-3-270M, one prompt asking for subject, answer and
fact together often named the wrong subject or copied the wrong answer, while each step alone does well.
1. From the question alone: the subject and a cloze prompt ("Space Needle | The Space Needle is located in").
2. From the exchange and the correction: the right answer ("Right answer: Taipei"); when that answer does
   not pass validation, once more as the continuation of the cloze after the correction (IKE-style copying).
Every model output is validated: the subject occurs in the question; the new answer is short, is written
in the correction, is not negated there ("not Seattle"), and is not the answer being corrected. What fails
is a FailedPrecondition that says what is missing, never a guessed edit.

The prompts are in correction_prompts.py, the validation in correction_parsing.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from server.chat.correction_parsing import (
    bland_cloze,
    build_spec,
    lead_in,
    only_name,
    parse_subject_line,
    parse_target,
    with_question,
)
from server.chat.correction_prompts import EXAMPLES, Example, Exchange, answer_prompt, cloze_prompt, subject_prompt
from server.chat.wording import content_words
from server.errors import FailedPrecondition
from server.interfaces import Generator
from server.types import EditSpec, GenerationOptions

SUBJECT_TOKENS = 32  # "Space Needle | The Space Needle is located in" and some slack
TARGET_TOKENS = 16


@dataclass(frozen=True)
class Extraction:
    spec: EditSpec
    outputs: tuple[str, ...]  # the model's raw outputs, in order


class CorrectionExtractor:
    """Reads free-text corrections with a model that answers prompts as they are (the base route)."""

    def __init__(self, model: Generator, examples: Sequence[Example] = EXAMPLES) -> None:
        self._model = model
        self._examples = tuple(examples)

    def extract(self, exchange: Exchange, correction: str) -> Extraction:
        """The edit a correction asks for; FailedPrecondition when it cannot be read unambiguously."""
        if not content_words(correction):
            raise FailedPrecondition(
                f"the correction {correction!r} does not say what the right answer is; "
                "say it, e.g. 'No, it is <the right answer>'"
            )
        subject_output = self._complete(subject_prompt(self._examples, exchange.question), SUBJECT_TOKENS)
        subject, cloze = parse_subject_line(subject_output, exchange.question)
        outputs = [subject_output]
        problems = []
        for prompt in (answer_prompt(self._examples, exchange, correction),
                       cloze_prompt(self._examples, correction, cloze or bland_cloze(exchange.question))):
            output = self._complete(prompt, TARGET_TOKENS)
            outputs.append(output)
            target, problem = parse_target(output, correction, exchange, subject, cloze)
            if target is not None:
                spec = build_spec(exchange.question, subject, cloze, target, lead_in(correction, target))
                return Extraction(spec, tuple(outputs))
            problems.append(problem)
        if (name := only_name(correction, exchange, subject)) is not None:
            spec = build_spec(exchange.question, subject, cloze, name, lead_in(correction, name))
            return Extraction(spec, tuple(outputs))
        raise FailedPrecondition(
            f"could not find the right answer in the correction {correction!r} ({problems[0]}); "
            "say it plainly, e.g. 'No, it is <the right answer>', or send subject, prompt and target_new"
        )

    def _complete(self, prompt: str, max_new_tokens: int) -> str:
        options = GenerationOptions(max_new_tokens=max_new_tokens, stop=("\n",))
        return self._model.generate(prompt, None, options).text.split("\n", 1)[0]


def structured_spec(exchange: Exchange, spec: EditSpec) -> EditSpec:
    """A correction given as fields: the question joins its paraphrases, so the gate catches it next turn."""
    return replace(spec, paraphrases=with_question(spec.paraphrases, spec.prompt, exchange.question))
