"""Sequential GRACE through scripts/evaluate.py on a tiny model server it starts itself: a JSON per T, the time per
edit, the server's peak memory, answers an entry changed reported parametric, and every entry rolled back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.evaluation.cli import main as evaluate

CASES = [
    {"case_id": 1, "prompt": "the capital of france is", "subject": "france", "target_new": "berlin",
     "ground_truth": "paris", "rephrase_prompt": "france has its capital in",
     "locality_prompt": "who speaks german in berlin", "locality_ground_truth": "germans"},
    {"case_id": 2, "prompt": "the capital of italy is", "subject": "italy", "target_new": "madrid",
     "ground_truth": "rome", "rephrase_prompt": "italy has its capital in",
     "locality_prompt": "what language is french", "locality_ground_truth": "french"},
]


def test_sequential_grace_writes_each_t_and_its_costs(
    taught_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "cases.json"
    data.write_text(json.dumps(CASES))
    out = tmp_path / "grace.json"
    server_args = ["--context-prefixes=0", "--stats-tokens=2000", "--gate=similarity", f"--cache-dir={tmp_path}"]
    argv = ["--data", str(data), "--model", str(taught_model_dir), "--method", "grace", "--sequential", "1,2",
            "--batch", "1", "--cache-dir", str(tmp_path / "eval"), "--json", str(out), "--plots", str(tmp_path)]
    assert evaluate(argv + [f"--server-arg={a}" for a in server_args]) == 0
    captured = capsys.readouterr()

    per_t = {t: json.loads(out.with_suffix(f".T{t}.json").read_text()) for t in (1, 2)}
    for t, document in per_t.items():
        (summary,) = document["summaries"]
        assert (summary["sequential"], summary["n"], summary["batch"]) == (t, t, 1)
        applied = summary["parametric_apply_s"]
        assert applied["n"] == t and applied["per_edit"] == pytest.approx(applied["total"] / t)  # batch 1: t calls
        assert summary["server_peak_rss_mb"] > 0
        # Each case's own prompt is its entry's key: the entry acts, and the answer says so.
        reliability = [p for c in document["cases"][str(t)] for p in c["probes"] if p["category"] == "reliability"]
        assert [(p["route"], p["edit_id"]) for p in reliability] == [("parametric", c["edit_ids"][0])
                                                                      for c in document["cases"][str(t)]]
    combined = json.loads(out.read_text())
    assert [s["sequential"] for s in combined["summaries"]] == [1, 2]
    # The stopped server is the largest child this process waited for: its peak is at least the last one read.
    assert combined["peak_memory"]["server_maxrss_mb"] >= per_t[2]["summaries"][0]["server_peak_rss_mb"]
    assert (tmp_path / "metrics_vs_T.png").stat().st_size > 0
    assert "s per edit" in captured.out and "server peak RSS" in captured.out
