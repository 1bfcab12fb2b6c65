"""What in-scope generators that state the edit in the prompt share: build the prompt, then decode or score."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from transformers import Cache

from server.errors import FailedPrecondition
from server.generators.decoding import CausalLM
from server.interfaces import StopCheck, TextSink
from server.types import Edit, Generation, GenerationOptions, Route, TokenScores


def with_related(statement: str, related: Sequence[Edit]) -> str:
    """An edit's fact as a route writes it, then each related edit's sentence (`Edit.statement`), in order."""
    return " ".join((statement, *(e.statement() for e in related)))


class EditInPromptGenerator(ABC):
    route: Route

    def __init__(self, lm: CausalLM) -> None:
        self._lm = lm

    @abstractmethod
    def prompt_for(self, edit: Edit, query: str, related: Sequence[Edit] = ()) -> str:
        """The text the base model continues: the edit's fact, then the related ones (`with_related`)."""

    def generate(
        self,
        prompt: str,
        edit: Edit | None,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
        related: Sequence[Edit] = (),
    ) -> Generation:
        edit = self._require(edit)
        return self._lm.decode(self.prompt_for(edit, prompt, related), self.adjust_options(options), on_text,
                               should_stop, self.prefill(edit, prompt, related))

    def prefill(self, edit: Edit, query: str, related: Sequence[Edit] = ()) -> Cache | None:
        """The model's cache of this prompt from an earlier pass, if the route kept one (none by default)."""
        return None

    def adjust_options(self, options: GenerationOptions) -> GenerationOptions:
        """Generation options as this route needs them (by default, as the caller gave them)."""
        return options

    def score(self, prompt: str, edit: Edit | None, target: str, related: Sequence[Edit] = ()) -> TokenScores:
        return self._lm.score(self.prompt_for(self._require(edit), prompt, related), target)

    def _require(self, edit: Edit | None) -> Edit:
        if edit is None:
            raise FailedPrecondition(f"the {self.route.value} route answers in-scope queries only; no edit was given")
        return edit
