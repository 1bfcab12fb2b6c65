"""The trained gate: the scope classifier's network over (query, edit) pair features."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np
from cachetools import LRUCache

from server.gate.artifact import GateArtifact
from server.gate.features import EditView, edit_view, pair_features, token_inputs
from server.memory.embed import SentenceEncoder
from server.types import Edit, EncodedText, Hit


class ClassifierGate:
    """The trained scope classifier (server/gate/artifact.py, trained by scope_classifier/) over pair features.

    A query is scored against the edit's key text closest to it (by sentence embedding): the prompt, or a
    paraphrase, or a patch's example question, whichever it resembles most; a rule's own wording ("If asked who
    leads X, say ...") is far from the questions it covers, its examples are not. The edit side of the features
    needs one encoder pass over each key text; it is computed when the edit is added (`warm`), or the first time
    it is retrieved after a restart, and kept in a bounded LRU cache (about 20 KB a key text, most of it the token
    vectors the `interaction` design reads).
    """

    def __init__(self, artifact: GateArtifact, encoder: SentenceEncoder, cache_size: int = 100_000) -> None:
        self._artifact = artifact
        self._encoder = encoder
        self._views: LRUCache[str, tuple[EditView, ...]] = LRUCache(maxsize=cache_size)  # edit id → one per key text
        self._lock = threading.Lock()  # scores() runs on several I/O threads; LRUCache is not thread-safe

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        if not hits:
            return []
        views = [closest(query, self._edit_views(h.edit)) for h in hits]
        features = np.stack([pair_features(query, v, h.similarity) for v, h in zip(views, hits, strict=True)])  # (k, F)
        if not self._artifact.uses_tokens:
            return [float(p) for p in self._artifact.predict(features)]
        query_tokens = [token_inputs(query, v.subject, v.target_new) for v in views]
        return [float(p) for p in self._artifact.predict(features, query_tokens, [v.tokens for v in views])]

    def warm(self, edits: Sequence[Edit], encoded: Mapping[str, EncodedText] | None = None) -> None:
        """Computes the edit side of the features for many edits at once (batched encoder passes for key texts
        not in `encoded`)."""
        known = dict(encoded or {})
        missing = list(dict.fromkeys(t for e in edits for t in e.key_texts() if t not in known))
        known.update(zip(missing, self._encoder.encode_texts(missing), strict=True))
        with self._lock:
            for edit in edits:
                self._views[edit.id] = _views(edit, [known[t] for t in edit.key_texts()])

    def _edit_views(self, edit: Edit) -> tuple[EditView, ...]:
        with self._lock:
            views = self._views.get(edit.id)  # a hit counts as a use
        if views is not None:
            return views
        # Encoded outside the lock, so other threads' hits do not wait for this pass.
        views = _views(edit, self._encoder.encode_texts(edit.key_texts()))
        with self._lock:
            self._views[edit.id] = views
        return views


def closest(query: EncodedText, views: Sequence[EditView]) -> EditView:
    """The view of the key text whose sentence embedding is nearest the query's."""
    return max(views, key=lambda v: float(query.vector @ v.prompt_vector))


def _views(edit: Edit, key_texts: Sequence[EncodedText]) -> tuple[EditView, ...]:
    return tuple(edit_view(text, edit.subject, edit.target_new) for text in key_texts)
