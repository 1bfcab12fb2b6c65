"""The trained gate: the scope classifier's network over (query, edit) pair features."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from cachetools import LRUCache

from server.gate.artifact import GateArtifact
from server.gate.features import EditView, edit_view, find_span, object_statement, pair_features, token_inputs
from server.memory.embed import SentenceEncoder
from server.types import Edit, EditKey, EditKind, EncodedText, Hit, KeyEncodings

# Edits about what the base model never knew: their subjects are unfamiliar to the encoder too, so a gate trained
# on mostly familiar subjects leans on the subject and lets another relation of it in.
UNFAMILIAR_KINDS = frozenset({EditKind.INSERT, EditKind.PATCH})


@dataclass
class _EditViews:
    """The gate's side of one edit: its prompt's view, the unit vectors of all its key texts (to find the one
    closest to a query), and the views of other key texts, made the first time one is the closest."""

    prompt: EditView
    key_vectors: np.ndarray  # (n_keys, dim), the prompt's first
    others: dict[int, EditView] = field(default_factory=dict)  # key index → view


class ClassifierGate:
    """The trained scope classifier (server/gate/artifact.py, trained by scope_classifier/) over pair features.

    A query is scored against the edit's key text closest to it (by sentence embedding): the prompt, or a
    paraphrase, or a patch's example question, whichever it resembles most; a rule's own wording ("If asked who
    leads X, say ...") is far from the questions it covers, its examples are not. Each key is read with its own
    subject: an alias key (the prompt naming an alias of the subject) with the alias, so the subject features fire
    on a query that names the alias; and when the query names some keys' subjects, the closest of those keys is
    taken (the same as the closest of all for an edit without aliases). The edit side of the features
    needs one encoder pass over the prompt; it is computed when the edit is added (`warm`), or the first time it
    is retrieved after a restart, and kept in a bounded LRU cache (about 20 KB an edit, most of it the token
    vectors the `interaction` design reads). Another key text's view is made when a query first finds it closest.
    An edit found by its new object is read from the object (`object_statement`), a view made, for every such hit
    of a query in one encoder pass, the first time the edit is found that way, and cached by edit id and version
    (an update changes the statement).
    """

    def __init__(
        self, artifact: GateArtifact, encoder: SentenceEncoder, cache_size: int = 100_000,
        unfamiliar: GateArtifact | None = None, objects: GateArtifact | None = None,
    ) -> None:
        """`unfamiliar`, when given, scores the edits of `UNFAMILIAR_KINDS` instead of `artifact`; `objects` scores
        the hits found by their new object (`Hit.by_object`, reverse questions), on the edit read from its object
        (`object_statement`); without it such hits score 0. Their scores are put on `artifact`'s scale
        (`on_scale`), so that one threshold serves all three."""
        self._artifact = artifact
        self._unfamiliar = unfamiliar
        self._objects = objects
        self._encoder = encoder
        self._views: LRUCache[str, _EditViews] = LRUCache(maxsize=cache_size)  # edit id → its views
        # (edit id, version) → the edit read from its object; fewer, as few queries name an edit's object
        self._object_views: LRUCache[tuple[str, int], EditView] = LRUCache(maxsize=max(1, cache_size // 10))
        self._lock = threading.Lock()  # scores() runs on several I/O threads; LRUCache is not thread-safe

    @property
    def reads_objects(self) -> bool:
        """Whether hits found by their new object can score above 0 (ScopeCheck looks them up only then)."""
        return self._objects is not None

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        if not hits:
            return []
        groups: dict[int, tuple[GateArtifact, list[int]]] = {}  # id(artifact) → (artifact, rows it scores)
        for i, hit in enumerate(hits):
            artifact = self._artifact_for(hit)
            if artifact is not None:
                groups.setdefault(id(artifact), (artifact, []))[1].append(i)
        object_views = self._object_views_of([h.edit for h in hits if h.by_object and self._objects is not None])
        out = np.zeros(len(hits))
        for artifact, rows in groups.values():
            views = [object_views[_version(hits[i].edit)] if hits[i].by_object
                     else self._closest_view(query, hits[i].edit) for i in rows]
            # A hit by object was not found through a key vector: its similarity is the query's to the statement.
            similarities = [float(query.vector @ v.prompt_vector) if hits[i].by_object else hits[i].similarity
                            for i, v in zip(rows, views, strict=True)]
            p = predict_pairs(artifact, query, views, similarities)
            out[rows] = p if artifact is self._artifact else on_scale(p, artifact.threshold, self._artifact.threshold)
        return [float(p) for p in out]

    def _artifact_for(self, hit: Hit) -> GateArtifact | None:
        """The artifact that scores a hit; None (a score of 0) for a hit by object without the object gate."""
        if hit.by_object:
            return self._objects
        if self._unfamiliar is not None and hit.edit.kind in UNFAMILIAR_KINDS:
            return self._unfamiliar
        return self._artifact

    def warm(self, edits: Sequence[Edit], encoded: KeyEncodings | None = None) -> None:
        """Computes the edit side of the features for many edits at once (batched encoder passes for what
        `encoded` lacks)."""
        encoded = encoded or KeyEncodings({}, {})
        prompts = [p for p in dict.fromkeys(e.prompt for e in edits) if p not in encoded.prompts]
        whole = encoded.prompts | dict(zip(prompts, self._encoder.encode_texts(prompts), strict=True))
        texts = [t for t in dict.fromkeys(t for e in edits for t in e.key_texts()[1:]) if t not in encoded.vectors]
        vectors = encoded.vectors | dict(zip(texts, self._vectors(texts), strict=True))
        with self._lock:
            for edit in edits:
                self._views[edit.id] = _edit_views(edit, whole[edit.prompt], [vectors[t] for t in edit.key_texts()[1:]])

    def _closest_view(self, query: EncodedText, edit: Edit) -> EditView:
        with self._lock:
            views = self._views.get(edit.id)  # a hit counts as a use
        if views is None:
            # Encoded outside the lock, so other threads' hits do not wait for this pass.
            others = edit.key_texts()[1:]
            views = _edit_views(edit, self._encoder.encode_text(edit.prompt), self._vectors(others))
            with self._lock:
                self._views[edit.id] = views
        keys = edit.index_keys()
        closest = _closest_key(views.key_vectors @ query.vector, query.text, keys)
        if closest == 0:
            return views.prompt
        view = views.others.get(closest)
        if view is None:
            key = keys[closest]
            view = edit_view(self._encoder.encode_text(key.text), key.subject, edit.target_new)
            with self._lock:
                views.others[closest] = view
        return view

    def _object_views_of(self, edits: Sequence[Edit]) -> dict[tuple[str, int], EditView]:
        """Each edit read from its new object: the fact stated (`object_statement`), the object as the subject a
        query names, the edit's subject as the answer; the missing ones in one encoder pass."""
        with self._lock:
            found = {_version(e): v for e in edits if (v := self._object_views.get(_version(e))) is not None}
        missing = list({_version(e): e for e in edits if _version(e) not in found}.values())
        if missing:
            statements = self._encoder.encode_texts([object_statement(e.prompt, e.fact_object) for e in missing])
            made = {_version(e): edit_view(statement, e.fact_object, e.subject)
                    for e, statement in zip(missing, statements, strict=True)}
            with self._lock:
                self._object_views.update(made)
            found |= made
        return found

    def _vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        return list(self._encoder.encode(texts)) if texts else []  # most edits have their prompt as only key


def _version(edit: Edit) -> tuple[str, int]:
    return edit.id, edit.version


def predict_pairs(
    artifact: GateArtifact, query: EncodedText, views: Sequence[EditView], similarities: Sequence[float]
) -> np.ndarray:
    """P(in scope) of the query against each view: (k,)."""
    features = np.stack([pair_features(query, v, s) for v, s in zip(views, similarities, strict=True)])  # (k, F)
    if not artifact.uses_tokens:
        return artifact.predict(features)
    query_tokens = [token_inputs(query, v.subject, v.target_new) for v in views]
    return artifact.predict(features, query_tokens, [v.tokens for v in views])


def on_scale(p: np.ndarray, own_threshold: float, threshold: float) -> np.ndarray:
    """Scores of a gate whose threshold is `own_threshold` mapped onto a gate whose threshold is `threshold`:
    piecewise linear, 0 → 0, own_threshold → threshold, 1 → 1, so the order and the in/out decision are kept
    and the supersede threshold means the same distance above the threshold for both."""
    below = p * threshold / max(own_threshold, 1e-9)
    above = threshold + (p - own_threshold) * (1.0 - threshold) / max(1.0 - own_threshold, 1e-9)
    return np.where(p < own_threshold, below, above)


def _closest_key(similarities: np.ndarray, query_text: str, keys: Sequence[EditKey]) -> int:
    """The index of the most similar key ((n_keys,) cosines), among the keys whose subject the query names when it
    names any."""
    named = {s for s in dict.fromkeys(k.subject for k in keys) if find_span(query_text, s) is not None}
    candidates = [i for i, k in enumerate(keys) if k.subject in named] or range(len(keys))
    return max(candidates, key=lambda i: float(similarities[i]))


def _edit_views(edit: Edit, prompt: EncodedText, other_vectors: Sequence[np.ndarray]) -> _EditViews:
    return _EditViews(edit_view(prompt, edit.subject, edit.target_new), np.stack([prompt.vector, *other_vectors]))
