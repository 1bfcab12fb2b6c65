"""client/evaluation/runner.py: what the harness keeps between runs."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
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


def test_evaluations_side_by_side_save_one_baseline_cache_file_without_losing_a_save(tmp_path: Path) -> None:
    """Two harness processes share the file; each save goes through its own temporary file (a shared temporary name
    let one save rename the other's away, failing a long run at its end)."""
    path = tmp_path / "baseline.json"
    caches = [BaselineCache(path) for _ in range(8)]
    for i, cache in enumerate(caches):
        cache._entries = {f"k{i}": {"token_ids": [i], "predicted_ids": [i]}}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda cache: [cache.save() for _ in range(25)], caches))
    assert json.loads(path.read_text()) in [c._entries for c in caches]
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]
