"""What in-scope generators that state the edit in the prompt share: build the prompt, then decode or score."""

from __future__ import annotations

from abc import ABC, abstractmethod

from transformers import Cache

from server.errors import FailedPrecondition
from server.generators.decoding import CausalLM
from server.interfaces import StopCheck, TextSink
from server.types import Edit, Generation, GenerationOptions, Route, TokenScores


class EditInPromptGenerator(ABC):
    route: Route

    def __init__(self, lm: CausalLM) -> None:
        self._lm = lm

    @abstractmethod
    def prompt_for(self, edit: Edit, query: str) -> str:
        """The text the base model continues."""

    def generate(
        self,
        prompt: str,
        edit: Edit | None,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
    ) -> Generation:
        edit = self._require(edit)
        return self._lm.decode(self.prompt_for(edit, prompt), self.adjust_options(options), on_text, should_stop,
                               self.prefill(edit, prompt))

    def prefill(self, edit: Edit, query: str) -> Cache | None:
        """The model's cache of this prompt from an earlier pass, if the route kept one (none by default)."""
        return None

    def adjust_options(self, options: GenerationOptions) -> GenerationOptions:
        """Generation options as this route needs them (by default, as the caller gave them)."""
        return options

    def score(self, prompt: str, edit: Edit | None, target: str) -> TokenScores:
        return self._lm.score(self.prompt_for(self._require(edit), prompt), target)

    def _require(self, edit: Edit | None) -> Edit:
        if edit is None:
            raise FailedPrecondition(f"the {self.route.value} route answers in-scope queries only; no edit was given")
        return edit
