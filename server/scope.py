"""Retrieval then the gate: the best edit of a namespace for a query, and the gate's score for it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

from server.interfaces import Embedder, Gate, Memory
from server.types import Edit, EditSpec, EncodedText, Hit, Timings


@dataclass(frozen=True)
class ScopeCheck:
    embedder: Embedder
    memory: Memory
    gate: Gate
    top_k: int
    # True for edits the gate must not see (baked into the weights and taken out of the gate).
    hidden: Callable[[Edit], bool] = lambda edit: False

    def add(self, namespace: str, specs: Sequence[EditSpec]) -> list[Edit]:
        """Stores the edits (durable on return), then prepares the gate's side of them."""
        edits = self.memory.add(namespace, specs)
        self.gate.warm([e for e in edits if e.key_texts()])  # a regex patch never meets the gate
        return edits

    def best(self, namespace: str, text: str) -> tuple[Hit | None, float, Timings]:
        """The highest-scoring of the top-k retrieved edits (None when the namespace has none)."""
        t0 = perf_counter()
        encoded = self.embedder.encode_text(text)
        embed_ms = (perf_counter() - t0) * 1e3
        hit, p, timings = self.best_encoded(namespace, encoded)
        timings.embed_ms = embed_ms
        return hit, p, timings

    def best_encoded(self, namespace: str, encoded: EncodedText) -> tuple[Hit | None, float, Timings]:
        """`best` for a query already through the encoder (callers that batch encoder passes)."""
        t1 = perf_counter()
        hits = [h for h in self.memory.search(namespace, encoded.vector, self.top_k) if not self.hidden(h.edit)]
        t2 = perf_counter()
        scores = self.gate.scores(encoded, hits)
        t3 = perf_counter()
        timings = Timings(search_ms=(t2 - t1) * 1e3, gate_ms=(t3 - t2) * 1e3)
        p, hit = max(zip(scores, hits, strict=True), key=lambda s: s[0], default=(0.0, None))
        return hit, p, timings
