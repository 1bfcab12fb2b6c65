"""scripts/methods_table.py: methods compared on the cases every run shares, from evaluate.py's JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.methods_table import read_runs, table


def probe(category: str, em: bool, tf: float) -> dict[str, Any]:
    return {"category": category, "em": em, "tf": tf}


def run_file(path: Path, cases: dict[str, list[dict[str, Any]]], apply_p50: float | None = None) -> Path:
    summary = {"parametric_apply_s": {"p50": apply_p50}, "server_peak_rss_mb": 3000.0} if apply_p50 else {}
    path.write_text(json.dumps({"summaries": [summary], "cases": {"None": [
        {"case_id": case_id, "probes": probes} for case_id, probes in cases.items()]}}))
    return path


def test_only_the_cases_every_run_has_are_scored(tmp_path: Path) -> None:
    first = run_file(tmp_path / "a1.json", {"1": [probe("reliability", True, 1.0)],
                                            "2": [probe("reliability", False, 0.5)]})
    second = run_file(tmp_path / "a2.json", {"3": [probe("reliability", False, 0.0)]}, apply_p50=2.5)
    other = run_file(tmp_path / "b.json", {"2": [probe("reliability", True, 1.0), probe("locality", False, 0.25)],
                                          "3": [probe("reliability", True, 1.0), probe("locality", True, 0.75)],
                                          "4": [probe("reliability", False, 0.0)]})
    text = table({"a": read_runs([first, second]), "b": read_runs([other])})
    assert "Cases shared by every run: 2 (case ids 2, 3)" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| a ") or
            line.startswith("| b ")}
    assert text.splitlines()[2].startswith("| method | reliability EM / TF | locality EM / TF | s per edit")  # no other
    assert rows["a"].split(" | ")[1:3] == ["0.00 / 0.25", "—"]  # cases 2 and 3 only: case 1 is not in b's run
    assert rows["b"].split(" | ")[1:3] == ["1.00 / 1.00", "0.50 / 0.50"]
    assert rows["a"].split(" | ")[3:] == ["2.5", "3,000 |"] and rows["b"].split(" | ")[3:] == ["—", "— |"]


def test_runs_with_no_case_in_common_are_refused(tmp_path: Path) -> None:
    a = run_file(tmp_path / "a.json", {"1": [probe("reliability", True, 1.0)]})
    b = run_file(tmp_path / "b.json", {"2": [probe("reliability", True, 1.0)]})
    with pytest.raises(SystemExit, match="share no case"):
        table({"a": read_runs([a]), "b": read_runs([b])})
