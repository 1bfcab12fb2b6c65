"""The evaluation harness end to end against the tiny-model server, on every supported format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client import GenerationOptions
from client.evaluation.cli import main as evaluate
from client.launch import LocalServer

FIXTURES = Path(__file__).parents[1] / "fixtures" / "eval"
HEADLINE_KEYS = {"n", "method", "seconds"} | {
    f"{c}_{m}" for c in ("reliability", "generalization", "locality", "portability") for m in ("em", "tf")
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[dict, str]:
    assert evaluate(list(argv)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1]), "\n".join(out[:-1])


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_format_runs_and_ends_with_the_summary_line(
    running_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], fixture: str
) -> None:
    records = json.loads((FIXTURES / fixture).read_text())
    summary, table = run(capsys, "--data", str(FIXTURES / fixture), "--addr", running_server.addr,
                         "--cache-dir", str(tmp_path), "--json", str(tmp_path / "out.json"))
    assert set(summary) >= HEADLINE_KEYS and summary["method"] == "gate"
    assert summary["n"] == len(records)
    assert "| reliability |" in table
    saved = json.loads((tmp_path / "out.json").read_text())
    assert len(saved["cases"]["None"]) == len(records)


def test_an_offset_slice_keeps_the_files_case_ids(
    running_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """zsRE records have no id of their own: a case is named by its place in the file, in any slice of it."""
    data = FIXTURES / "zsre_mend.json"
    summary, _ = run(capsys, "--data", str(data), "--addr", running_server.addr, "--method", "base", "--offset", "1",
                     "--limit", "1", "--cache-dir", str(tmp_path), "--json", str(tmp_path / "out.json"))
    per_case = json.loads((tmp_path / "out.json").read_text())["cases"]["None"]
    assert summary["n"] == 1 and [c["case_id"] for c in per_case] == ["1"]


def test_scores_known_by_construction(
    running_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target equal to the model's own greedy word scores 1; a word it does not predict scores 0."""
    prompt, other_prompt = "the capital of france is", "who speaks german in berlin"
    with running_server.client() as client:
        greedy = client.generate(prompt, options=GenerationOptions(max_new_tokens=1), route="base").text.strip()
        other = client.generate(other_prompt, options=GenerationOptions(max_new_tokens=1), route="base").text.strip()
    wrong = next(w for w in ("city", "country", "language", "spain") if w not in (greedy, other))
    cases = [
        {"case_id": 1, "prompt": prompt, "subject": "france", "target_new": greedy, "ground_truth": "x",
         "rephrase_prompt": prompt, "locality_prompt": other_prompt, "locality_ground_truth": other},
        {"case_id": 2, "prompt": other_prompt, "subject": "german", "target_new": wrong, "ground_truth": "x",
         "rephrase_prompt": other_prompt, "locality_prompt": prompt, "locality_ground_truth": greedy},
    ]
    data = tmp_path / "cases.json"
    data.write_text(json.dumps(cases))
    summary, _ = run(capsys, "--data", str(data), "--addr", running_server.addr, "--method", "base",
                     "--cache-dir", str(tmp_path), "--json", str(tmp_path / "out.json"))
    per_case = json.loads((tmp_path / "out.json").read_text())["cases"]["None"]
    reliability = [next(p for p in c["probes"] if p["category"] == "reliability") for c in per_case]
    assert [(p["em"], p["tf"]) for p in reliability] == [(True, 1.0), (False, 0.0)]
    assert summary["reliability_em"] == 0.5 and summary["locality_em"] == 1.0 and summary["locality_tf"] == 1.0
    assert summary["portability_em"] is None


def test_sequential_mode_scores_after_all_edits_are_in(
    running_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = FIXTURES / "counterfact_flat.json"
    summary, table = run(capsys, "--data", str(data), "--addr", running_server.addr, "--sequential", "1,3",
                         "--cache-dir", str(tmp_path), "--method", "prompt")
    assert summary["n"] == 3 and summary["sequential"] == 3
    assert table.count("method `prompt`") == 2  # one table per T


def test_sequential_mode_sets_aside_locality_probes_that_ask_another_edits_fact(
    running_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 2's neighbourhood prompt names case 1's subject and expects its original answer: with both edits
    in memory (T = 2) it asks an edited fact, alone (T = 1) it does not."""
    cases = [
        {"case_id": 1, "prompt": "the capital of france is", "subject": "france", "target_new": "rome",
         "ground_truth": "paris", "rephrase_prompt": "france has its capital in",
         "locality_prompt": "the capital of spain is", "locality_ground_truth": "madrid"},
        {"case_id": 2, "prompt": "the capital of italy is", "subject": "italy", "target_new": "berlin",
         "ground_truth": "rome", "rephrase_prompt": "italy has its capital in",
         "locality_prompt": "france has its capital in", "locality_ground_truth": "paris"},
    ]
    data = tmp_path / "cases.json"
    data.write_text(json.dumps(cases))
    summary, table = run(capsys, "--data", str(data), "--addr", running_server.addr, "--sequential", "1,2",
                         "--cache-dir", str(tmp_path), "--method", "prompt", "--json", str(tmp_path / "out.json"))
    saved = json.loads((tmp_path / "out.json").read_text())
    flagged = {t: [p["prompt"] for c in saved["cases"][t] for p in c["probes"] if p["asks_other_edit"]]
               for t in ("1", "2")}
    assert flagged == {"1": [], "2": ["france has its capital in"]}
    assert saved["summaries"][1]["locality_asks_other_edit"] == 1
    assert summary["locality_em_excl_edited_facts"] is not None
    assert "locality without the 1 probes asking an edited fact (1 another edit's, 0 their own edit's)" in table
    # a run saved before the rule (no flags) is flagged again from its JSON, without a server
    for results in saved["cases"].values():
        for case in results:
            for p in case["probes"]:
                p.pop("asks_own_edit")
                p["asks_other_edit"] = False
    old = tmp_path / "old.json"
    old.write_text(json.dumps(saved))
    again, table = run(capsys, "--data", str(data), "--from-json", str(old))
    assert again["locality_em_excl_edited_facts"] == summary["locality_em_excl_edited_facts"]
    assert "locality without the 1 probes asking an edited fact (1 another edit's, 0 their own edit's)" in table
    assert table.count("method `prompt`") == 2  # T = 1 and T = 2 again


def test_a_locality_probe_that_asks_the_cases_own_edited_fact_is_set_aside(
    running_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """zsRE's same-relation "locality" probes: the probe names the case's own subject and expects the answer its
    edit replaces, so following the edit is right and the unedited answer wrong."""
    case = {"case_id": 1, "prompt": "the capital of france is", "subject": "france", "target_new": "rome",
            "ground_truth": "paris", "rephrase_prompt": "france has its capital in",
            "locality_prompt": "the capital city of france is", "locality_ground_truth": "paris"}
    data = tmp_path / "case.json"
    data.write_text(json.dumps([case]))
    summary, table = run(capsys, "--data", str(data), "--addr", running_server.addr, "--cache-dir", str(tmp_path),
                         "--method", "prompt", "--json", str(tmp_path / "out.json"))
    (probe,) = [p for c in json.loads((tmp_path / "out.json").read_text())["cases"]["None"] for p in c["probes"]
                if p["category"] == "locality"]
    assert probe["asks_own_edit"] and not probe["asks_other_edit"]
    assert summary["locality_em_excl_edited_facts"] is None  # no other locality probe is left
    assert "without the 1 probes asking an edited fact (0 another edit's, 1 their own edit's) | — | — |" in table


def test_parametric_methods_apply_score_and_roll_back(
    running_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = "the capital of france is"
    with running_server.client() as client:
        before = client.generate(prompt, options=GenerationOptions(max_new_tokens=4), route="base").token_ids
    data = FIXTURES / "counterfact_flat.json"
    assert evaluate(["--data", str(data), "--addr", running_server.addr, "--method", "rome",
                     "--cache-dir", str(tmp_path), "--json", str(tmp_path / "rome.json")]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    n_cases = len(json.loads(data.read_text()))
    assert summary["method"] == "rome" and summary["n"] == n_cases
    assert "| reliability |" in captured.out
    assert "value" in captured.err  # ApplyParametric's stages are shown while the weights change
    applied = json.loads((tmp_path / "rome.json").read_text())["summaries"][0]["parametric_apply_s"]
    assert applied["n"] == n_cases and 0 < applied["p50"] <= applied["max"]  # ROME: one call per edit, timed
    assert "ApplyParametric: p50" in captured.out
    with running_server.client() as client:  # every edit rolled back: the weights are the original ones again
        assert client.generate(prompt, options=GenerationOptions(max_new_tokens=4), route="base").token_ids == before


def test_a_case_the_server_refuses_is_skipped_and_counted(
    running_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """zsRE dev has subjects its prompt does not name; the run goes on and says how many it skipped."""
    case = {"case_id": 1, "prompt": "the capital of france is", "subject": "france", "target_new": "rome",
            "ground_truth": "paris", "rephrase_prompt": "france's capital is",
            "locality_prompt": "who speaks german in berlin", "locality_ground_truth": "germans"}
    unnamed = case | {"case_id": 2, "subject": "the french republic"}
    data = tmp_path / "cases.json"
    data.write_text(json.dumps([unnamed, case]))
    summary, table = run(capsys, "--data", str(data), "--addr", running_server.addr, "--method", "prompt",
                         "--cache-dir", str(tmp_path), "--json", str(tmp_path / "out.json"))
    assert summary["n"] == 1 and summary["skipped"] == 1
    assert "1 more cases skipped" in table
    per_case = {c["case_id"]: c for c in json.loads((tmp_path / "out.json").read_text())["cases"]["None"]}
    assert "does not occur in prompt" in per_case["2"]["skipped"] and per_case["2"]["probes"] == []
    assert per_case["1"]["skipped"] is None and per_case["1"]["probes"]
