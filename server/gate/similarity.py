"""The untrained gate: retrieval's own similarity, clipped to [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

from server.types import Edit, EncodedText, Hit, KeyEncodings


class SimilarityGate:
    """The untrained baseline: the cosine similarity of the query to the edit's closest key text."""

    reads_objects = False  # it has no reading of an edit from its object

    def scores(self, query: EncodedText, hits: Sequence[Hit]) -> list[float]:
        return [min(1.0, max(0.0, hit.similarity)) for hit in hits]

    def warm(self, edits: Sequence[Edit], encoded: KeyEncodings | None = None) -> None:
        pass  # nothing per edit beyond the keys the memory already indexed
