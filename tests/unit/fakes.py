"""Small fakes satisfying the protocols in `server/interfaces.py`, shared by the unit tests."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from server.errors import EditNotFound
from server.interfaces import Deletion, EditPage, EventPage, Replaced, StopCheck, TextSink
from server.types import (
    Edit,
    EditEvent,
    EditKind,
    EditSpec,
    EncodedText,
    FinishReason,
    Generation,
    GenerationOptions,
    Hit,
    KeyEncodings,
    Route,
    TokenScores,
    subject_key,
)

WORD = re.compile(r"[a-z0-9]+")


class HashEmbedder:
    """Bag of words hashed into `dim` buckets, normalised: texts sharing words are close.

    A different `salt` gives a different (but equally deterministic) word-to-bucket mapping.
    """

    def __init__(self, dim: int = 64, salt: str = "") -> None:
        self.dim = dim
        self.salt = salt
        self.calls: list[list[str]] = []

    def bucket(self, word: str) -> int:
        digest = hashlib.sha256(f"{self.salt}|{word}".encode()).digest()
        return int.from_bytes(digest[:8], "little") % self.dim

    def vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in WORD.findall(text.lower()):
            v[self.bucket(word)] += 1.0
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            v[0] = 1.0
            return v
        return v / norm

    def encode_text(self, text: str) -> EncodedText:
        """One token per word: its bucket's one-hot vector and its character span."""
        self.calls.append([text])
        words = list(WORD.finditer(text.lower()))
        tokens = np.zeros((max(1, len(words)), self.dim), dtype=np.float32)
        for i, match in enumerate(words):
            tokens[i, self.bucket(match.group())] = 1.0
        spans = tuple(m.span() for m in words) or ((0, 0),)
        return EncodedText(text, self.vector(text), tokens, spans)

    def encode_texts(self, texts: Sequence[str]) -> list[EncodedText]:
        return [self.encode_text(t) for t in texts]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.vector(t) for t in texts]).astype(np.float32)


def make_edit(edit_id: str = "0" * 32, namespace: str = "ns", prompt: str = "The capital of France is",
              target_new: str = "Rome", subject: str = "France", paraphrases: tuple[str, ...] = ()) -> Edit:
    return Edit(id=edit_id, namespace=namespace, subject=subject, prompt=prompt, target_new=target_new,
                target_true=None, paraphrases=paraphrases, created_at_unix_s=0.0)


def make_spec(subject: str = "France", prompt: str = "The capital of France is", target_new: str = "Rome",
              paraphrases: tuple[str, ...] = (), target_true: str | None = "Paris") -> EditSpec:
    return EditSpec(subject=subject, prompt=prompt, target_new=target_new, target_true=target_true,
                    paraphrases=paraphrases)


@dataclass
class FixedMemory:
    """A memory whose search returns the given hits, recording the namespaces and k it was asked for.

    `get` finds an edit among the hits by namespace and id, as a real memory would.
    """

    hits: list[Hit] = field(default_factory=list)
    searches: list[tuple[str, int]] = field(default_factory=list)
    others: list[Edit] = field(default_factory=list)  # edits search never returns (regex patches)

    def add(self, namespace: str, specs: Sequence[EditSpec], replaces: Sequence[Replaced] = (),
            token_name: str = "", vectors: Sequence[np.ndarray] | None = None) -> list[Edit]:
        raise NotImplementedError

    def update(self, namespace: str, edit_id: str, spec: EditSpec, token_name: str = "",
               vectors: np.ndarray | None = None) -> Edit:
        raise NotImplementedError

    def history(self, namespace: str, edit_id: str) -> tuple[Edit, list[Edit]]:
        raise NotImplementedError

    def same_subject(self, namespace: str, subjects: Sequence[str]) -> dict[str, list[Edit]]:
        edits = [h.edit for h in self.hits] + self.others
        found = {s: [e for e in edits if e.namespace == namespace and e.live and e.kind is not EditKind.REGEX
                     and subject_key(e.subject) == subject_key(s)] for s in subjects}
        return {s: found_edits for s, found_edits in found.items() if found_edits}

    def facts_about(self, namespace: str, subject: str) -> list[Edit]:
        return self.same_subject(namespace, [subject]).get(subject, [])

    def events(self, namespace: str, page_size: int, page_token: str, edit_id: str | None = None) -> EventPage:
        raise NotImplementedError

    def record(self, events: Sequence[EditEvent]) -> None:
        raise NotImplementedError

    def get(self, namespace: str, edit_id: str) -> Edit:
        for hit in self.hits:
            if hit.edit.id == edit_id and hit.edit.namespace == namespace:
                return hit.edit
        raise EditNotFound(f"no edit with id {edit_id!r} in namespace {namespace!r}")

    def page(self, namespace: str, page_size: int, page_token: str) -> EditPage:
        raise NotImplementedError

    def delete(self, namespace: str, edit_id: str, token_name: str = "") -> Deletion:
        raise NotImplementedError

    def live_of_kind(self, namespace: str, kind: EditKind) -> list[Edit]:
        edits = [h.edit for h in self.hits] + self.others
        return [e for e in edits if e.namespace == namespace and e.kind is kind and e.live]

    def with_objects(self, namespace: str, object_keys: Sequence[str], limit: int) -> list[Edit]:
        return []  # the hits are the whole memory: tests of object keys use a real EditMemory

    def search(self, namespace: str, query_vector: np.ndarray, k: int) -> list[Hit]:
        self.searches.append((namespace, k))
        return list(self.hits)

    def close(self) -> None:
        pass


@dataclass
class FixedGate:
    """A gate returning the given score for each hit, keyed by the hit's edit id (0 if not given)."""

    by_edit_id: dict[str, float] = field(default_factory=dict)
    warmed: list[str] = field(default_factory=list)  # ids of the edits `warm` was given, in order

    reads_objects = False

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        return [self.by_edit_id.get(h.edit.id, 0.0) for h in hits]

    def warm(self, edits: Sequence[Edit], encoded: KeyEncodings | None = None) -> None:
        self.warmed.extend(e.id for e in edits)


@dataclass
class RecordingGenerator:
    """A generator that answers with a marker and records every (prompt, edit) it was asked for."""

    route: Route
    requests: list[tuple[str, Edit | None, GenerationOptions]] = field(default_factory=list)
    scored: list[tuple[str, Edit | None, str]] = field(default_factory=list)
    related: list[tuple[Edit, ...]] = field(default_factory=list)  # the related facts of each request and score

    def generate(
        self,
        prompt: str,
        edit: Edit | None,
        options: GenerationOptions,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
        related: Sequence[Edit] = (),
    ) -> Generation:
        self.requests.append((prompt, edit, options))
        self.related.append(tuple(related))
        text = f"{self.route.value}:{prompt}"
        if on_text is not None:
            on_text(text)
        return Generation(text, (), FinishReason.LENGTH)

    def score(self, prompt: str, edit: Edit | None, target: str, related: Sequence[Edit] = ()) -> TokenScores:
        self.scored.append((prompt, edit, target))
        self.related.append(tuple(related))
        return TokenScores(target_ids=(len(target),), predicted_ids=(len(prompt),), target_logprobs=(-1.0,))
