"""The gate decision: which route answers a query, from which edit. Nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

from server.interfaces import Embedder, Gate, Generator, Memory, StopCheck, TextSink
from server.types import Decision, Generation, Query, Route, Timings


@dataclass(frozen=True)
class Router:
    embedder: Embedder
    memory: Memory
    gate: Gate
    base: Generator
    in_scope: Generator  # answers from the matching edit
    threshold: float
    top_k: int

    def decide(self, namespace: str, text: str) -> Decision:
        t0 = perf_counter()
        vector = self.embedder.encode([text])[0]  # (dim,)
        t1 = perf_counter()
        hits = self.memory.search(namespace, vector, self.top_k)
        t2 = perf_counter()
        scores = self.gate.scores(text, hits)
        t3 = perf_counter()
        timings = Timings(embed_ms=(t1 - t0) * 1e3, search_ms=(t2 - t1) * 1e3, gate_ms=(t3 - t2) * 1e3)
        p, hit = max(zip(scores, hits, strict=True), key=lambda s: s[0], default=(0.0, None))
        if hit is None or p < self.threshold:
            return Decision(Route.BASE, None, p, timings)
        return Decision(self.in_scope.route, hit.edit, p, timings)

    def generate(
        self,
        query: Query,
        decision: Decision,
        on_text: TextSink | None = None,
        should_stop: StopCheck | None = None,
    ) -> Generation:
        generator = self.base if decision.edit is None else self.in_scope
        return generator.generate(query.text, decision.edit, query.options, on_text, should_stop)
