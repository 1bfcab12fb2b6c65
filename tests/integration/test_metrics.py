"""Prometheus /metrics on --metrics-listen: every family is there, and requests move the values."""

from __future__ import annotations

import socket
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import EditcacheError, EditInput, GenerationOptions, NotFound
from client.launch import LocalServer

FAMILIES = {
    "grpc_server_started", "grpc_server_handled", "grpc_server_handling_seconds", "editcache_answers",
    "editcache_gate_seconds", "editcache_queue_seconds", "editcache_generation_seconds", "editcache_gate_score",
    "editcache_queue_depth", "editcache_batch_size", "editcache_edits", "editcache_parametric_operations",
    "editcache_parametric_seconds",
}
PROMPT = "the capital of france is"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def metrics_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, str]]:
    """Its own server: the figures are per process, and the shared server's other tests would move them too."""
    port = free_port()
    server = LocalServer(tiny_model_dir, tmp_path_factory.mktemp("metrics-data"),
                         "--metrics-listen", f"127.0.0.1:{port}", "--gate", "similarity")
    server.start()
    yield server, f"http://127.0.0.1:{port}/metrics"
    server.stop()


def scrape(url: str) -> tuple[set[str], Samples]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    families = list(text_string_to_metric_families(text))
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}
    return {f.name for f in families}, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of `name` whose labels include `labels` (0 when there are none yet)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def test_families_exist_and_values_move_with_requests(metrics_server: tuple[LocalServer, str]) -> None:
    server, url = metrics_server
    families, before = scrape(url)
    assert families >= FAMILIES, FAMILIES - families

    namespace = "m-" + uuid.uuid4().hex[:8]
    with server.client(namespace) as client:
        client.add_edits([EditInput("france", PROMPT, "rome"), EditInput("germany", "the capital of germany is", "x")])
        client.generate(PROMPT, options=GenerationOptions(max_new_tokens=3))
        client.generate("who speaks german in berlin", options=GenerationOptions(max_new_tokens=3))
        chain = client.answer_multihop("what is spoken in the capital of france",
                                       steps=[PROMPT, "the language of #1 is"])
        with pytest.raises(NotFound):
            client.get_edit("0" * 32)
        with pytest.raises(EditcacheError):  # nothing baked: the rollback fails, and is counted as such
            client.rollback_parametric("0" * 32)
    _, after = scrape(url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    service = "editcache.v1.EditService"
    assert moved("grpc_server_started_total", grpc_service=service, grpc_method="AddEdits") == 1
    assert moved("grpc_server_handled_total", grpc_service=service, grpc_method="AddEdits", grpc_code="OK") == 1
    assert moved("grpc_server_handled_total", grpc_method="GetEdit", grpc_code="NOT_FOUND") == 1
    assert moved("grpc_server_handled_total", grpc_method="Generate", grpc_code="OK") == 2
    assert moved("grpc_server_handling_seconds_count", grpc_method="Generate") == 2
    assert moved("editcache_answers_total", kind="generate") == 2
    for stage in ("embed", "search", "gate", "decision"):
        assert moved("editcache_gate_seconds_count", stage=stage) == 2
    assert moved("editcache_gate_seconds_sum", stage="decision") > 0
    assert moved("editcache_gate_score_count") == 2
    assert moved("editcache_queue_seconds_count") == 3  # the two answers and the chain
    assert moved("editcache_answers_total", kind="multihop_step") == len(chain.hops) == 2
    assert moved("editcache_answers_total", kind="multihop_step", route=chain.hops[0].route) >= 1
    assert moved("editcache_generation_seconds_count") == 2
    assert moved("editcache_batch_size_count", kind="add_edits") == 1
    assert moved("editcache_batch_size_sum", kind="add_edits") == 2
    assert moved("editcache_batch_size_count", kind="model") >= 2
    assert value(after, "editcache_edits", namespace=namespace) == 2
    assert value(after, "editcache_queue_depth") == 0  # nothing running between requests
    assert moved("editcache_parametric_operations_total", operation="rollback", status="error") == 1
