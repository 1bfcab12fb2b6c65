"""Prometheus metric families, each defined once, and the small recorders the front ends and use cases call.

Per-RPC families reuse go-grpc-prometheus's names (grpc_server_started_total, grpc_server_handled_total,
grpc_server_handling_seconds), so existing gRPC dashboards read them; the rest are editcache_*. Everything is on
prometheus_client's default registry, which `serve_metrics` exposes on its own port and the HTTP front end can
mount (`prometheus_client.make_asgi_app()`).

This module sits beside the layers and imports none of ours: any layer may record into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Seconds: from a few milliseconds (an edit lookup) to minutes (a MEMIT application on 2 cores).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600)
# The gate's own stages run in milliseconds: finer at the low end.
GATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05 … 1.0
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
RPC_STARTED = Counter("grpc_server_started", "RPCs started on the server.", RPC_LABELS)
RPC_HANDLED = Counter("grpc_server_handled", "RPCs completed on the server, by status code.",
                      (*RPC_LABELS, "grpc_code"))
RPC_SECONDS = Histogram("grpc_server_handling_seconds", "Time from an RPC's start to its end on the server.",
                        RPC_LABELS, buckets=LATENCY_BUCKETS)

ANSWERS = Counter("editcache_answers", "Answers (generate, chat, score, multihop_step: one step of a multi-hop "
                  "answer) by the route that produced them.",
                  ("kind", "route", "abstained"))
GATE_SECONDS = Histogram("editcache_gate_seconds", "The route decision's stages: embed, search, gate (the "
                         "classifier and any counterfactual judgement) and decision (their sum).",
                         ("stage",), buckets=GATE_BUCKETS)
QUEUE_SECONDS = Histogram("editcache_queue_seconds", "Time a request waited for the model thread.",
                          buckets=LATENCY_BUCKETS)
GENERATION_SECONDS = Histogram("editcache_generation_seconds", "Time on the model thread, by route.", ("route",),
                               buckets=LATENCY_BUCKETS)
GATE_SCORE = Histogram("editcache_gate_score", "The gate's score of the best edit, for queries the gate decided.",
                       buckets=SCORE_BUCKETS)
QUEUE_DEPTH = Gauge("editcache_queue_depth", "Requests waiting for or running on the model thread.")
BATCH_SIZE = Histogram("editcache_batch_size", "Items per unit of work: `model`, requests per model-thread call "
                       "(a decoding step: the rows of the running batch; a prompt's pass or a call that has the model "
                       "to itself: 1); `add_edits`, edits per AddEdits request.",
                       ("kind",), buckets=SIZE_BUCKETS)
PARAMETRIC_OPERATIONS = Counter("editcache_parametric_operations", "Parametric operations by method and outcome.",
                                ("operation", "method", "status"))
PARAMETRIC_SECONDS = Histogram("editcache_parametric_seconds", "Duration of parametric operations.",
                               ("operation", "method"), buckets=LATENCY_BUCKETS)


class _EditsPerNamespace(Collector):
    """editcache_edits{namespace}, read from the edit memory when scraped (the store is the truth, not a tally)."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("editcache_edits", "Edits stored, by namespace.", labels=("namespace",))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("editcache_edits", "Edits stored, by namespace.", labels=("namespace",))
        for namespace, count in (self.source() if self.source is not None else {}).items():
            family.add_metric((namespace,), count)
        yield family


_EDITS = _EditsPerNamespace()
REGISTRY.register(_EDITS)


def watch_edits(source: Callable[[], Mapping[str, int]]) -> None:
    """Scrapes report `source()` (namespace → edits) as editcache_edits."""
    _EDITS.source = source


def watch_queue(depth: Callable[[], float]) -> None:
    """Scrapes report `depth()` as editcache_queue_depth."""
    QUEUE_DEPTH.set_function(depth)


@dataclass
class RpcCall:
    """One RPC being timed; its front end sets `code` (a grpc.StatusCode name) when it ends with an error."""

    code: str = "OK"


@contextmanager
def rpc(service: str, method: str, kind: str) -> Iterator[RpcCall]:
    """Counts the RPC as started now, and as handled with its code (and its duration) when the block ends."""
    labels = (kind, service, method)
    RPC_STARTED.labels(*labels).inc()
    call = RpcCall()
    started = perf_counter()
    try:
        yield call
    except (asyncio.CancelledError, GeneratorExit):
        if call.code == "OK":  # the caller went away: no status was sent
            call.code = "CANCELLED"
        raise
    except BaseException:
        if call.code == "OK":
            call.code = "UNKNOWN"
        raise
    finally:
        RPC_HANDLED.labels(*labels, call.code).inc()
        RPC_SECONDS.labels(*labels).observe(perf_counter() - started)


def observe_answer(kind: str, route: str, abstained: bool, gated: bool, score: float, embed_ms: float,
                   search_ms: float, gate_ms: float, queue_ms: float, generate_ms: float) -> None:
    """One answer's figures (the service layer's Timings, in milliseconds). `gated`: the gate decided the route
    (no route was forced), so its stages ran and its score means something."""
    ANSWERS.labels(kind, route, "true" if abstained else "false").inc()
    if gated:
        for stage, ms in (("embed", embed_ms), ("search", search_ms), ("gate", gate_ms),
                          ("decision", embed_ms + search_ms + gate_ms)):
            GATE_SECONDS.labels(stage).observe(ms / 1e3)
        GATE_SCORE.observe(score)
    QUEUE_SECONDS.observe(queue_ms / 1e3)
    GENERATION_SECONDS.labels(route).observe(generate_ms / 1e3)


def observe_chain(hop_routes: Sequence[str], queue_ms: float) -> None:
    """A multi-hop answer: each step as an answer of kind multihop_step by its route, and the chain's wait for the
    model (its steps' own stages run inside the chain, on the model's side)."""
    for route in hop_routes:
        ANSWERS.labels("multihop_step", route, "false").inc()
    QUEUE_SECONDS.observe(queue_ms / 1e3)


@contextmanager
def parametric(operation: str, method: str) -> Iterator[None]:
    """Counts a parametric operation (apply, rollback, export) as ok or error, with its duration."""
    started = perf_counter()
    status = "error"
    try:
        yield
        status = "ok"
    finally:
        PARAMETRIC_OPERATIONS.labels(operation, method, status).inc()
        PARAMETRIC_SECONDS.labels(operation, method).observe(perf_counter() - started)


def serve_metrics(host: str, port: int) -> Callable[[], None]:
    """Serves /metrics (the default registry) on its own HTTP port from a daemon thread; returns its stop."""
    server, thread = start_http_server(port, addr=host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop
