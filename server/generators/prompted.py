"""An in-scope route: the base model with the edit stated before the query (route `prompt`)."""

from __future__ import annotations

from collections.abc import Sequence

from server.generators.in_prompt import EditInPromptGenerator, with_related
from server.types import Edit, Route

# Measured on Gemma-3-270M: with this header the model continues both the edited
# prompt and a question-style paraphrase with the new target.
TEMPLATE = "New fact: {statement}\n{query}"


def prompt_with_edit(edit: Edit, query: str, related: Sequence[Edit] = ()) -> str:
    return TEMPLATE.format(statement=with_related(edit.statement(), related), query=query)


class PromptedGenerator(EditInPromptGenerator):
    route = Route.PROMPT

    def prompt_for(self, edit: Edit, query: str, related: Sequence[Edit] = ()) -> str:
        return prompt_with_edit(edit, query, related)
