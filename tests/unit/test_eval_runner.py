"""client/evaluation/runner.py: what the harness keeps between runs."""

from __future__ import annotations

from pathlib import Path

from client import ServerInfo
from client.evaluation.runner import BaselineCache


def test_the_baseline_cache_is_keyed_by_the_served_weights(tmp_path: Path) -> None:
    def info(fingerprint: str) -> ServerInfo:
        return ServerInfo("gemma-3-270m", "gemma3_text", 268_000_000, "all-MiniLM-L6-v2", "classifier", 0.2, 8,
                          "counterfactual", ("base",), "0.1.0", model_fingerprint=fingerprint)

    path = BaselineCache.for_server(info("gemma-3-270m-aaaaaaaaaaaa"), tmp_path)._path
    assert path == BaselineCache.for_server(info("gemma-3-270m-aaaaaaaaaaaa"), tmp_path)._path
    assert path != BaselineCache.for_server(info("gemma-3-270m-bbbbbbbbbbbb"), tmp_path)._path
