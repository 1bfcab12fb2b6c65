"""The gate evaluation: which negatives count as false alarms, and how the threshold is chosen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editdata.cases import Case, EditFact, Probe
from editdata.readers import load_cases
from scope_classifier.evaluate import ProbeScore, choose_threshold, gate_metrics, score_probes
from server.gate.similarity import SimilarityGate
from server.memory.embed import SentenceEncoder

FIXTURE = Path(__file__).parents[1] / "fixtures" / "eval" / "counterfact_flat.json"


def _scores(neighbourhood: list[tuple[float, bool]], same_subject: tuple[float, ...] = ()) -> list[ProbeScore]:
    prompts = [ProbeScore("prompt", 0.9, True, False)] * 200
    paraphrases = [ProbeScore("paraphrase", 0.11 + 0.79 * i / 99, True, False) for i in range(100)]
    negatives = [ProbeScore("neighbourhood", s, False, elsewhere) for s, elsewhere in neighbourhood]
    return prompts + paraphrases + negatives + [ProbeScore("same_subject", s, False, False) for s in same_subject]


def test_threshold_maximises_paraphrase_recall_within_the_false_alarm_bound() -> None:
    # Two false alarms at 0.5 in 101 neighbourhood prompts (FPR 0.0198): the threshold must pass 0.5, and
    # keep as many paraphrases as the first grid point past it (0.5025) does.
    scores = _scores([(0.05, False)] * 99 + [(0.5, False)] * 2)
    threshold = choose_threshold(scores)
    metrics = gate_metrics(scores, threshold, 0)
    assert threshold > 0.5 and metrics["locality_fpr"] == 0.0
    assert metrics["in_scope_recall_paraphrase"] == gate_metrics(scores, 0.5025, 0)["in_scope_recall_paraphrase"]
    assert metrics["in_scope_recall_paraphrase"] == pytest.approx(0.5)


def test_a_negative_that_asks_an_edited_fact_is_no_false_alarm() -> None:
    # One of the two is in scope of an edit in memory: 1 false alarm in 100 meets the 0.01 bound, so
    # every paraphrase can be kept in scope.
    scores = _scores([(0.05, False)] * 99 + [(0.5, False), (0.5, True)])
    threshold = choose_threshold(scores)
    assert 0.1 < threshold <= 0.11
    metrics = gate_metrics(scores, threshold, 0)
    assert metrics["locality_fpr"] == 0.01 and metrics["locality_fpr_all"] == pytest.approx(2 / 101, abs=1e-4)
    assert metrics["in_scope_recall_paraphrase"] == 1.0


def test_same_subject_false_alarms_bound_the_threshold_too() -> None:
    # 4 of 100 same-subject prompts score 0.3 (FPR 0.04 > 0.03): the threshold must pass 0.3.
    scores = _scores([(0.05, False)] * 100, same_subject=(0.02,) * 96 + (0.3,) * 4)
    threshold = choose_threshold(scores)
    metrics = gate_metrics(scores, threshold, 0)
    assert threshold > 0.3 and metrics["same_subject_fpr"] == 0.0
    assert metrics["in_scope_recall_paraphrase"] == gate_metrics(scores, 0.3025, 0)["in_scope_recall_paraphrase"]


def test_negatives_that_ask_an_edited_fact_are_marked_in_scope_elsewhere() -> None:
    riga = EditFact("Riga", "Riga is a twin city of", "Athens", "Kyiv")
    vilnius = EditFact("Vilnius", "Vilnius is a twin city of", "Oslo", "Kyiv")
    cases = [
        Case("0", (riga,), reliability=(Probe(riga.prompt, ("Athens",)),),
             same_subject=(Probe("Riga is located in the country of", ("Latvia",)),
                           Probe("What is the twin city of Riga?", ("Kyiv",)))),
        Case("1", (vilnius,), reliability=(Probe(vilnius.prompt, ("Oslo",)),),
             locality=(Probe("The twin city of Riga is", ("Kyiv",)),  # names Riga, expects its original answer
                       Probe("The twin city of Rigas Feraios is", ("Kyiv",)),  # another subject
                       Probe("The capital of France is", ("Paris",)),
                       Probe("Riga is a twin city of", ("Tbilisi",)))),  # the Riga edit's prompt word for word
    ]
    scores, n_edits, _ = score_probes(cases, ["how many legs does a spider have"], SentenceEncoder("all-MiniLM-L6-v2"),
                                      lambda encoder: SimilarityGate(), top_k=2)
    assert n_edits == 2
    assert [(s.kind, s.in_scope_elsewhere) for s in scores] == [
        ("prompt", False),
        ("same_subject", False),
        ("same_subject", True),
        ("prompt", False),
        ("neighbourhood", True),
        ("neighbourhood", False),
        ("neighbourhood", False),
        ("neighbourhood", True),
        ("unrelated", False),
    ]


def test_evaluate_command_scores_the_chosen_split_and_prints_json_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scope_classifier import __main__ as command
    from scope_classifier import evaluate

    (tmp_path / "zsre").mkdir()
    (tmp_path / "zsre" / "train-1k.json").write_text(json.dumps([{"loc": "nq question: who wrote hamlet"}]))
    asked: list[tuple[str, ...]] = []
    fixture = load_cases(FIXTURE)[1]
    monkeypatch.setattr(evaluate, "load_val_cases", lambda data_dir, files: asked.append(tuple(files)) or fixture)
    common = ["evaluate", "--data-dir", str(tmp_path), "--gate", "similarity"]

    assert command.main([*common, "--split", "zsre-dev", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert asked == [("zsre/dev.json",)] and summary["data"] == "zsre/dev.json" and summary["gate"] == "similarity"

    assert command.main(common) == 0
    table = capsys.readouterr().out
    assert asked[-1] == ("counterfact/val.json", "zsre/dev.json")
    assert not table.lstrip().startswith("{") and "data" in table and "counterfact/val.json + zsre/dev.json" in table
