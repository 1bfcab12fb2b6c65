"""An in-scope route: the base model with the edit stated before the query.

The first counterfactual generator; the trained counterfactual model and IKE replace it.
"""

from __future__ import annotations

from server.errors import FailedPrecondition
from server.generators.decoding import CausalLM
from server.interfaces import StopCheck, TextSink
from server.types import Edit, Generation, GenerationOptions, Route, TokenScores

# Measured on Gemma-3-270M: with this header the model continues both the edited
# prompt and a question-style paraphrase with the new target.
TEMPLATE = "New fact: {statement}\n{query}"


def prompt_with_edit(edit: Edit, query: str) -> str:
    return TEMPLATE.format(statement=edit.statement(), query=query)


def _require(edit: Edit | None) -> Edit:
    if edit is None:
        raise FailedPrecondition("the prompted generator answers in-scope queries only; no edit was given")
    return edit


class PromptedGenerator:
    route = Route.PROMPT

    def __init__(self, lm: CausalLM) -> None:
        self._lm = lm

    def generate(
        self,
        prompt: str,
        edit: Edit | None,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
    ) -> Generation:
        return self._lm.decode(prompt_with_edit(_require(edit), prompt), options, on_text, should_stop)

    def score(self, prompt: str, edit: Edit | None, target: str) -> TokenScores:
        return self._lm.score(prompt_with_edit(_require(edit), prompt), target)
