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

    The edit side of the features needs one encoder pass over the edit prompt; it is computed when the
    edit is added (`warm`), or the first time it is retrieved after a restart, and kept in a bounded LRU
    cache (about 20 KB an edit, most of it the token vectors the `interaction` design reads).
    """

    def __init__(self, artifact: GateArtifact, encoder: SentenceEncoder, cache_size: int = 100_000) -> None:
        self._artifact = artifact
        self._encoder = encoder
        self._views: LRUCache[str, EditView] = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()  # scores() runs on several I/O threads; LRUCache is not thread-safe

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        if not hits:
            return []
        views = [self._view(h.edit) for h in hits]
        features = np.stack([pair_features(query, v, h.similarity) for v, h in zip(views, hits, strict=True)])  # (k, F)
        if not self._artifact.uses_tokens:
            return [float(p) for p in self._artifact.predict(features)]
        query_tokens = [token_inputs(query, v.subject, v.target_new) for v in views]
        return [float(p) for p in self._artifact.predict(features, query_tokens, [v.tokens for v in views])]

    def warm(self, edits: Sequence[Edit], encoded: Mapping[str, EncodedText] | None = None) -> None:
        """Computes the edit side of the features for many edits at once (batched encoder passes for prompts
        not in `encoded`)."""
        known = dict(encoded or {})
        missing = list(dict.fromkeys(e.prompt for e in edits if e.prompt not in known))
        known.update(zip(missing, self._encoder.encode_texts(missing), strict=True))
        with self._lock:
            for edit, prompt in ((e, known[e.prompt]) for e in edits):
                self._views[edit.id] = edit_view(prompt, edit.subject, edit.target_new)

    def _view(self, edit: Edit) -> EditView:
        with self._lock:
            view = self._views.get(edit.id)  # a hit counts as a use
        if view is not None:
            return view
        # Encoded outside the lock, so other threads' hits do not wait for this pass.
        view = edit_view(self._encoder.encode_text(edit.prompt), edit.subject, edit.target_new)
        with self._lock:
            self._views[edit.id] = view
        return view
