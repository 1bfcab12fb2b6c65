"""The out-of-scope route: the untouched base model on the untouched prompt."""

from __future__ import annotations

from collections.abc import Sequence

from server.generators.decoding import CausalLM
from server.interfaces import StopCheck, TextSink
from server.types import Edit, Generation, GenerationOptions, Route, TokenScores


class BaseGenerator:
    route = Route.BASE

    def __init__(self, lm: CausalLM) -> None:
        self._lm = lm

    def generate(
        self,
        prompt: str,
        edit: Edit | None,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
        related: Sequence[Edit] = (),
    ) -> Generation:
        # The edit is ignored by design: this route must equal the unedited model token for token.
        return self._lm.decode(prompt, options, on_text, should_stop)

    def score(self, prompt: str, edit: Edit | None, target: str, related: Sequence[Edit] = ()) -> TokenScores:
        return self._lm.score(prompt, target)
