"""A 20-second smoke run of scripts/loadtest.py on the tiny model: no unexpected errors, no lost edits, and the
server's /metrics families moved by the load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "loadtest.py"


def test_loadtest_smoke(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(tiny_model_dir), "--clients", "4", "--duration-s", "20",
         "--max-queue", "2", "--sample-s", "5", "--data-dir", str(tmp_path / "data"),
         "--server-arg=--gate", "--server-arg=similarity", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == json.loads(out.read_text())
    assert summary["unexpected_errors"] == 0, summary["errors"]
    assert summary["edits_acknowledged"] > 0 and summary["edits_lost"] == []
    assert summary["edits_found"] == summary["edits_acknowledged"]
    assert summary["latency_ms"]["Generate"]["n"] > 0
    assert summary["rss_mb"]["before"] > 0 and len(summary["rss_mb"]["samples"]) >= 2
    assert "| Generate |" in done.stdout
    moved = {name: m["moved"] for name, m in summary["metrics"].items()}
    # Not the queue depth: a gauge read at instants, often 0 then on the tiny model.
    for family in ("grpc_server_started", "grpc_server_handled", "grpc_server_handling_seconds", "editcache_answers",
                   "editcache_gate_seconds", "editcache_queue_seconds", "editcache_generation_seconds",
                   "editcache_batch_size", "editcache_edits"):
        assert moved.get(family, 0) > 0, (family, moved)
