"""editctl import and export-edits through the real gRPC server (tiny model): bad records are refused with their
lines while the good ones go in, and an exported namespace imports back into another one equal."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from client import EditcacheClient, EditRecord
from client.editctl import main as editctl
from client.launch import LocalServer


def fresh_namespace() -> str:
    return "bulk-" + uuid.uuid4().hex[:10]


def counterfact(subject: str, prompt: str, target: str) -> dict[str, str]:
    return {"subject": subject, "prompt": prompt, "target_new": target, "ground_truth": "paris",
            "rephrase_prompt": f"where is {subject}", "locality_prompt": "x", "locality_ground_truth": "y"}


def comparable(edits: list[EditRecord]) -> list[dict[str, Any]]:
    """The edits without what the server sets per copy: id, namespace and times."""
    return sorted((
        {k: v for k, v in dataclasses.asdict(e).items() if k not in {"id", "namespace"} and not k.endswith("_unix_s")}
        for e in edits), key=json.dumps)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = editctl([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_import_refuses_bad_records_by_line_and_export_reads_back_equal(
    running_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    records = [counterfact(f"city{i}", f"the mayor of city{i} is", f"mayor{i}") for i in range(10)]
    records[2]["target_new"] = " "  # blank: refused on reading
    records[5]["subject"] = "town5"  # not in the prompt: refused before sending
    records[7]["prompt"] = "the mayor of city7 is " + "very " * 500  # over the server's 2000 characters
    source = tmp_path / "cases.json"
    source.write_text(json.dumps(records, indent=2), encoding="utf-8")
    first_lines = [n for n, line in enumerate(source.read_text().splitlines(), start=1) if line == "  {"]
    namespace, copy = fresh_namespace(), fresh_namespace()
    addr = ("--addr", running_server.addr)

    code, report, err = run_json(capsys, "import", str(source), "--format", "counterfact", "--namespace", namespace,
                                 "--batch-size", "4", *addr)
    assert code == 2 and "3 of 10 records refused" in err
    assert (report["added"], report["records_added"]) == (7, 7)
    assert [(r["line"], r["record"]) for r in report["refused"]] == [(first_lines[i], i) for i in (2, 5, 7)]
    assert "record 7: prompt has 2522 characters; the limit is 2000" in report["refused"][2]["reason"]
    # batches of the 8 records left: 0, 1, 3, 4 and 6, 7, 8, 9; the server refused the second, which was halved
    assert [(f["first_line"], f["records"]) for f in report["fallbacks"]] == [(first_lines[6], 4)]

    extra = tmp_path / "extra.jsonl"  # fields counterfact records lack: paraphrases, no target_true
    extra.write_text(json.dumps({"subject": "france", "prompt": "the capital of france is", "target_new": "rome",
                                 "paraphrases": ["france's capital is"]}) + "\n", encoding="utf-8")
    assert editctl(["import", str(extra), "--format", "jsonl", "--namespace", namespace, *addr]) == 0
    assert "added 1 edits from 1 records" in capsys.readouterr().out

    exported = tmp_path / "out.jsonl"
    code, summary, _ = run_json(capsys, "export-edits", "-o", str(exported), "--namespace", namespace, *addr)
    assert (code, summary["exported"]) == (0, 8)
    code, report, _ = run_json(capsys, "import", str(exported), "--format", "jsonl", "--namespace", copy,
                               "--skip-supersede", *addr)
    assert (code, report["added"], report["superseding"], report["refused"]) == (0, 8, 0, [])

    with EditcacheClient(running_server.addr) as client:
        original = list(client.iter_edits(namespace=namespace))
        imported = list(client.iter_edits(namespace=copy))
    assert len(original) == 8
    assert comparable(imported) == comparable(original)
    assert {e.subject for e in original} == {f"city{i}" for i in (0, 1, 3, 4, 6, 8, 9)} | {"france"}
