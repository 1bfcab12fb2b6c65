"""The protocols the router depends on; `app.py` picks the implementations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from server.types import Edit, EditSpec, EncodedText, Generation, GenerationOptions, Hit, Route, TokenScores

TextSink = Callable[[str], None]  # receives each new piece of generated text
StopCheck = Callable[[], bool]  # True once the caller no longer wants tokens


class Embedder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 rows of unit length."""
        ...

    def encode_text(self, text: str) -> EncodedText:
        """One text with its token embeddings, for gates that look inside the query."""
        ...


@dataclass(frozen=True)
class EditPage:
    edits: list[Edit]
    next_page_token: str
    total: int


class Memory(Protocol):
    def add(self, namespace: str, specs: Sequence[EditSpec]) -> list[Edit]: ...

    def get(self, namespace: str, edit_id: str) -> Edit: ...

    def page(self, namespace: str, page_size: int, page_token: str) -> EditPage:
        """Edits oldest first, from `page_token` (empty for the first page)."""
        ...

    def delete(self, namespace: str, edit_id: str) -> Edit: ...

    def search(self, namespace: str, query_vector: np.ndarray, k: int) -> list[Hit]:
        """The k edits of the namespace whose key texts are closest to the (dim,) query vector."""
        ...

    def close(self) -> None: ...


class Gate(Protocol):
    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        """p(query is in the scope of hit.edit) for each hit, in [0, 1]."""
        ...

    def warm(self, edits: Sequence[Edit]) -> None:
        """Does the per-edit work now, so the first query that retrieves these edits is as fast as later ones."""
        ...


class Generator(Protocol):
    route: Route

    def generate(
        self,
        prompt: str,
        edit: Edit | None,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
    ) -> Generation: ...

    def score(self, prompt: str, edit: Edit | None, target: str) -> TokenScores:
        """Teacher-forced scores of `target` as the continuation of `prompt`, as this route sees it."""
        ...
