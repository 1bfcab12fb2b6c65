"""Gates: score how likely a query falls in the scope of each retrieved edit."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from scope_classifier.artifact import GateArtifact
from scope_classifier.features import EditView, edit_view, pair_features, token_inputs
from server.memory.embed import SentenceEncoder
from server.types import Edit, EncodedText, Hit


class SimilarityGate:
    """The untrained baseline: the cosine similarity of the query to the edit's closest key text."""

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        return [min(1.0, max(0.0, hit.similarity)) for hit in hits]

    def warm(self, edits: Sequence[Edit]) -> None:
        pass  # nothing per edit beyond the keys the memory already indexed


class ClassifierGate:
    """The trained scope classifier (scope_classifier/) over (query, edit) pair features.

    The edit side of the features needs one encoder pass over the edit prompt; it is computed when the
    edit is added (`warm`), or the first time it is retrieved after a restart, and kept in a bounded LRU
    cache (about 20 KB an edit, most of it the token vectors the `interaction` design reads).
    """

    def __init__(self, artifact: GateArtifact, encoder: SentenceEncoder, cache_size: int = 100_000) -> None:
        self._artifact = artifact
        self._encoder = encoder
        self._cache_size = cache_size
        self._views: OrderedDict[str, EditView] = OrderedDict()
        self._lock = threading.Lock()  # scores() runs on several I/O threads

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        if not hits:
            return []
        views = [self._view(h.edit) for h in hits]
        features = np.stack([pair_features(query, v, h.similarity) for v, h in zip(views, hits, strict=True)])  # (k, F)
        if not self._artifact.uses_tokens:
            return [float(p) for p in self._artifact.predict(features)]
        query_tokens = [token_inputs(query, v.subject, v.target_new) for v in views]
        return [float(p) for p in self._artifact.predict(features, query_tokens, [v.tokens for v in views])]

    def warm(self, edits: Sequence[Edit]) -> None:
        """Computes the edit side of the features for many edits at once (batched encoder passes)."""
        encoded = self._encoder.encode_texts([e.prompt for e in edits])
        with self._lock:
            for edit, prompt in zip(edits, encoded, strict=True):
                self._views[edit.id] = edit_view(prompt, edit.subject, edit.target_new)
            while len(self._views) > self._cache_size:
                self._views.popitem(last=False)

    def _view(self, edit: Edit) -> EditView:
        with self._lock:
            view = self._views.get(edit.id)
            if view is not None:
                self._views.move_to_end(edit.id)
                return view
        view = edit_view(self._encoder.encode_text(edit.prompt), edit.subject, edit.target_new)
        with self._lock:
            self._views[edit.id] = view
            if len(self._views) > self._cache_size:
                self._views.popitem(last=False)
        return view
