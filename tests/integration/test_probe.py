"""scripts/probe.py against the tiny model: every probe of issue 23 passes, none answers INTERNAL, and no answer
comes from another namespace's edit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "probe.py"


def test_probes_pass_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "probes.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(tiny_model_dir), "--work-dir", str(tmp_path / "work"),
         "--server-arg=--gate", "--server-arg=similarity", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == json.loads(out.read_text())
    failed = [o for o in summary["outcomes"] if not o["ok"]]
    assert done.returncode == 0 and failed == [], (failed, done.stderr[-3000:])
    assert summary["internal"] == 0 and summary["cross_namespace"] == 0
    probes = {o["probe"] for o in summary["outcomes"]}
    assert {"parametric_options", "export_paths", "tiny_temperature", "control_chars", "list_baked",
            "cancelled_stream", "foreign_edit_id", "cross_namespace", "swapped_index", "emptied_store"} <= probes
    assert "| probe | request | status | expected | verdict |" in done.stdout
