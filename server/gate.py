"""Gates: score how likely a query falls in the scope of each retrieved edit."""

from __future__ import annotations

from collections.abc import Sequence

from server.types import Hit


class SimilarityGate:
    """The untrained baseline: the cosine similarity of the query to the edit's closest key text."""

    def scores(self, query: str, hits: Sequence[Hit]) -> list[float]:
        return [min(1.0, max(0.0, hit.similarity)) for hit in hits]
