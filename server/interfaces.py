"""The protocols the router depends on; `app.py` picks the implementations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from server.types import (
    Edit,
    EditEvent,
    EditKind,
    EditSpec,
    EncodedText,
    Generation,
    GenerationOptions,
    Hit,
    KeyEncodings,
    TokenScores,
)

TextSink = Callable[[str], None]  # receives each new piece of generated text
StopCheck = Callable[[], bool]  # True once the caller no longer wants tokens


class RowActs(Protocol):
    def of_row(self, row: int) -> tuple[str, ...]:
        """The edits whose state beside the weights acted on row `row` of the forward calls watched, in the order
        each first did (server/parametric/additions.py's Acted)."""
        ...


# Watches the forward calls made inside the block (ParametricEditor.watching).
RowWatch = Callable[[], AbstractContextManager[RowActs]]


class Embedder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 rows of unit length."""
        ...

    def encode_text(self, text: str) -> EncodedText:
        """One text with its token embeddings, for gates that look inside the query."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> list[EncodedText]:
        """`encode_text` for many texts in batched passes."""
        ...


@dataclass(frozen=True)
class EditPage:
    edits: list[Edit]
    next_page_token: str
    total: int


@dataclass(frozen=True)
class EventPage:
    events: list[EditEvent]
    next_page_token: str


@dataclass(frozen=True)
class Deletion:
    edit: Edit  # as it was
    restored: Edit | None  # the edit it had superseded, live again


# What a new edit supersedes: a live edit's id, the index of an earlier edit of the same batch, or nothing.
Replaced = str | int | None


class Memory(Protocol):
    """The namespaces' edits. Only live edits (not superseded by a newer edit of the same fact) are listed,
    counted and searched; every write records its audit events in the same transaction. `token_name` is the
    caller's, for those events."""

    def add(
        self, namespace: str, specs: Sequence[EditSpec], replaces: Sequence[Replaced] = (), token_name: str = "",
        vectors: Sequence[np.ndarray] | None = None,
    ) -> list[Edit]:
        """Stores the edits; `replaces[i]` is what spec i supersedes (kept as history, out of the index);
        `vectors[i]` are spec i's (n_keys, dim) key embeddings when the caller has them (else embedded here)."""
        ...

    def update(
        self, namespace: str, edit_id: str, spec: EditSpec, token_name: str = "", vectors: np.ndarray | None = None
    ) -> Edit:
        """A live edit's new fields under the same id, one version up; the old version goes to its history.
        `vectors`: the new key embeddings, as in `add`."""
        ...

    def get(self, namespace: str, edit_id: str) -> Edit:
        """A live or superseded edit."""
        ...

    def history(self, namespace: str, edit_id: str) -> tuple[Edit, list[Edit]]:
        """The edit and what came before it, newest first: its earlier versions, then the edits it superseded."""
        ...

    def same_subject(self, namespace: str, subjects: Sequence[str]) -> dict[str, list[Edit]]:
        """Each subject → the live fact edits with the same subject up to case and spacing (the edits a new edit
        of that subject may supersede); subjects with none are absent."""
        ...

    def facts_about(self, namespace: str, subject: str) -> list[Edit]:
        """`same_subject` for one subject, as a query reads it (a shared store's in-memory copy, not the database):
        the edits an answer may read about an object it names (Router.related)."""
        ...

    def live_of_kind(self, namespace: str, kind: EditKind) -> list[Edit]:
        """The namespace's live edits of one kind, oldest first (e.g. its regex patches)."""
        ...

    def with_objects(self, namespace: str, object_keys: Sequence[str], limit: int) -> list[Edit]:
        """The newest `limit` live edits whose `Edit.object_key` is one of `object_keys` (a query's `named_keys`),
        newest first: the edits a reverse question may ask about."""
        ...

    def page(self, namespace: str, page_size: int, page_token: str) -> EditPage:
        """Live edits oldest first, from `page_token` (empty for the first page)."""
        ...

    def delete(self, namespace: str, edit_id: str, token_name: str = "") -> Deletion:
        """Removes the edit; the edit it had superseded becomes live again."""
        ...

    def events(self, namespace: str, page_size: int, page_token: str, edit_id: str | None = None) -> EventPage:
        """The namespace's audit log oldest first, from `page_token`; only `edit_id`'s events when given."""
        ...

    def record(self, events: Sequence[EditEvent]) -> None:
        """Appends events of changes recorded elsewhere (parametric application and rollback)."""
        ...

    def search(self, namespace: str, query_vector: np.ndarray, k: int) -> list[Hit]:
        """The k live edits of the namespace whose key texts are closest to the (dim,) query vector."""
        ...

    def close(self) -> None: ...


class Gate(Protocol):
    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        """p(query is in the scope of hit.edit) for each hit, in [0, 1]."""
        ...

    @property
    def reads_objects(self) -> bool:
        """Whether the gate can score hits found by their new object (`Hit.by_object`)."""
        ...

    def warm(self, edits: Sequence[Edit], encoded: KeyEncodings | None = None) -> None:
        """Does the per-edit work now, so the first query that retrieves these edits is as fast as later ones;
        `encoded` holds the edits' key texts already through the encoder, when the caller has them."""
        ...


class Generator(Protocol):
    """A route's answerer. `related`: further facts the answer reads after `edit`'s (Decision.related); routes that
    state the edit in the prompt state them after it, the others ignore them."""

    def generate(
        self,
        prompt: str,
        edit: Edit | None,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
        related: Sequence[Edit] = (),
    ) -> Generation: ...

    def score(self, prompt: str, edit: Edit | None, target: str, related: Sequence[Edit] = ()) -> TokenScores:
        """Teacher-forced scores of `target` as the continuation of `prompt`, as this route sees it."""
        ...
