"""The whole gate as the server runs it: every edit of the files in memory, retrieval top-k, then the gate."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from editdata.cases import Case, EditedFacts, Probe
from editdata.metrics import percentile
from editdata.readers import load_cases
from server.gate.artifact import GateArtifact
from server.gate.classifier import ClassifierGate
from server.interfaces import Gate
from server.memory.edit_memory import EditMemory
from server.memory.embed import SentenceEncoder
from server.scope import ScopeCheck
from server.types import EditSpec

VAL_FILES = ("counterfact/val.json", "zsre/dev.json")
VAL_SPLIT = "counterfact/val.json + zsre/dev.json"
# The splits `python -m scope_classifier evaluate --split` scores: both calibration files, or one of them.
SPLITS = {"val": VAL_FILES, "counterfact-val": VAL_FILES[:1], "zsre-dev": VAL_FILES[1:]}
# The splits `evaluate-object` scores the object gate on: reverse questions, and queries naming an edit's object.
OBJECT_SPLITS = {"zsre-dev": "zsre/dev.json", "zsre-inverse-dev": "zsre/inverse-dev.json",
                 "counterfact-val": "counterfact/val.json"}
# Unrelated questions (NQ) for the false-positive rate on queries no edit covers; training never uses them.
UNRELATED_FILE = "zsre/train-1k.json"
POSITIVE_KINDS = ("prompt", "paraphrase")
NEGATIVE_KINDS = ("neighbourhood", "same_subject", "unrelated")
Progress = Callable[[int, int, str], None]


# What training recorded in an artifact's metrics, which calibration keeps (the scores do not depend on the
# threshold): each design's figures at its own threshold, and the scores on the repository's fixture.
TRAINING_RECORDS = ("designs", "fixture_scores")
LATENCY_SAMPLE = 200  # probes timed one by one through ScopeCheck.best, as the server runs them


@dataclass(frozen=True)
class ProbeScore:
    kind: str  # prompt, paraphrase, neighbourhood, same_subject, unrelated
    score: float  # the gate's best score over the retrieved edits
    right_edit: bool  # the best-scoring edit is the probe's own (for positives)
    # A negative that asks the fact an edit in memory changes (`asks_edited_fact`, the sequential harness's
    # rule): that edit must answer it, so accepting it is no false alarm. Reported with and without.
    in_scope_elsewhere: bool


def load_val_cases(data_dir: Path, files: Sequence[str] = VAL_FILES) -> list[Case]:
    return [case for name in files for case in load_cases(data_dir / name)[1]]


def unrelated_questions(data_dir: Path, limit: int = 500) -> list[str]:
    records = json.loads((data_dir / UNRELATED_FILE).read_text())
    return [r["loc"].removeprefix("nq question: ") for r in records[:limit] if r.get("loc")]


def score_probes(
    cases: Sequence[Case],
    unrelated: Iterable[str],
    encoder: SentenceEncoder,
    gate_factory: Callable[[SentenceEncoder], Gate],
    top_k: int,
    progress: Progress | None = None,
) -> tuple[list[ProbeScore], int, list[float]]:
    """Puts every case's edit in one namespace, then scores each probe through retrieval and the gate.

    Returns the scores, the number of edits in memory and the latencies (ms) of ScopeCheck.best on a
    sample of probes. For speed the probes' encoder passes are batched; retrieval and the gate run per
    probe through ScopeCheck.best_encoded, and the latency sample times ScopeCheck.best end to end.
    """
    with tempfile.TemporaryDirectory(prefix="editcache-gate-eval-") as tmp:
        memory = EditMemory(Path(tmp), encoder, "eval")
        specs = [EditSpec(e.subject, e.prompt, e.target_new, e.target_true) for c in cases for e in c.edits[:1]]
        scope = ScopeCheck(encoder, memory, gate_factory(encoder), top_k)
        edits = scope.add("eval", specs)  # as AddEdits does: stored, then the gate warmed
        in_memory = EditedFacts(c.edits[0] for c in cases)
        probes = [(kind, probe.prompt, i, kind in NEGATIVE_KINDS and bool(in_memory.asked_by(probe)))
                  for i, case in enumerate(cases)
                  for kind, probe in _labelled_probes(case)]
        probes += [("unrelated", q, -1, False) for q in unrelated]
        encoded = encoder.encode_texts([text for _, text, _, _ in probes])
        scores = []
        for n, ((kind, _, case_index, elsewhere), query) in enumerate(zip(probes, encoded, strict=True)):
            hit, p, _ = scope.best_encoded("eval", query)
            right = hit is not None and case_index >= 0 and hit.edit.id == edits[case_index].id
            scores.append(ProbeScore(kind, p, right, elsewhere))
            if progress is not None and (n % 200 == 0 or n == len(probes) - 1):
                progress(n + 1, len(probes), kind)
        latencies = []
        for _, text, _, _ in probes[:: max(1, len(probes) // LATENCY_SAMPLE)]:
            started = perf_counter()
            scope.best("eval", text)
            latencies.append((perf_counter() - started) * 1e3)
        memory.close()
    return scores, len(edits), latencies


def _labelled_probes(case: Case) -> Iterable[tuple[str, Probe]]:
    yield from (("prompt", p) for p in case.reliability)
    yield from (("paraphrase", p) for p in case.generalization)
    yield from (("neighbourhood", p) for p in case.locality)
    yield from (("same_subject", p) for p in case.same_subject)


def gate_metrics(
    scores: Sequence[ProbeScore], threshold: float, n_edits: int, latencies: Sequence[float] = ()
) -> dict[str, Any]:
    def rate(kind: str, hit: Callable[[ProbeScore], bool], keep: Callable[[ProbeScore], bool] = bool) -> float | None:
        chosen = [s for s in scores if s.kind == kind and keep(s)]
        return round(sum(map(hit, chosen)) / len(chosen), 4) if chosen else None

    def accepted(s: ProbeScore) -> bool:
        return s.score >= threshold

    def accepted_right(s: ProbeScore) -> bool:
        return s.score >= threshold and s.right_edit

    return {
        "in_scope_recall_prompt": rate("prompt", accepted_right),
        "in_scope_recall_paraphrase": rate("paraphrase", accepted_right),
        "locality_fpr": rate("neighbourhood", accepted, lambda s: not s.in_scope_elsewhere),
        "locality_fpr_all": rate("neighbourhood", accepted),
        "locality_share_in_scope_elsewhere": rate("neighbourhood", lambda s: s.in_scope_elsewhere),
        "same_subject_fpr": rate("same_subject", accepted, lambda s: not s.in_scope_elsewhere),
        "same_subject_fpr_all": rate("same_subject", accepted),
        "same_subject_share_in_scope_elsewhere": rate("same_subject", lambda s: s.in_scope_elsewhere),
        "unrelated_fpr": rate("unrelated", accepted),
        "auroc": auroc([s.score for s in scores if s.kind in POSITIVE_KINDS],
                       [s.score for s in scores if s.kind in NEGATIVE_KINDS]),
        "threshold": round(threshold, 4),
        "n_edits_in_memory": n_edits,
        "n_probes": {k: sum(s.kind == k for s in scores) for k in (*POSITIVE_KINDS, *NEGATIVE_KINDS)},
        "latency_ms_p50": round(percentile(latencies, 50), 2) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 99), 2) if latencies else None,
    }


def choose_threshold(
    scores: Sequence[ProbeScore],
    min_prompt_recall: float = 0.995,
    max_locality_fpr: float = 0.01,
    max_same_subject_fpr: float = 0.03,
) -> float:
    """The threshold with the best paraphrase recall among those that meet the bounds on prompt recall
    and on both false-positive rates (the bounds of the gate's acceptance); ties go to the higher one.

    A missed edited prompt loses the edit outright and a false alarm breaks a fact no one edited, so
    those are bounds; paraphrase recall is what is left to maximise. Without a threshold meeting every
    bound, the one with the best prompt recall wins.
    """
    candidates = []
    for t in np.linspace(0.0, 1.0, 401):
        m = gate_metrics(scores, float(t), 0)
        prompt, paraphrase = m["in_scope_recall_prompt"] or 0.0, m["in_scope_recall_paraphrase"] or 0.0
        feasible = (prompt >= min_prompt_recall and (m["locality_fpr"] or 0.0) <= max_locality_fpr
                    and (m["same_subject_fpr"] or 0.0) <= max_same_subject_fpr)
        candidates.append(((feasible, paraphrase if feasible else prompt, float(t)), float(t)))
    return max(candidates)[1]


def calibrate(
    artifact: GateArtifact,
    cases: Sequence[Case],
    unrelated: Iterable[str],
    encoder: SentenceEncoder,
    top_k: int,
    progress: Progress | None = None,
) -> GateArtifact:
    """The artifact with its threshold chosen on `cases` (the whole gate, every edit in memory) and its
    metrics there at that threshold; the network is unchanged."""
    scores, n_edits, latencies = score_probes(
        cases, unrelated, encoder, partial(ClassifierGate, artifact), top_k, progress
    )
    threshold = choose_threshold(scores)
    metrics = gate_metrics(scores, threshold, n_edits, latencies) | {"split": VAL_SPLIT, "top_k": top_k}
    kept = {k: artifact.metrics[k] for k in TRAINING_RECORDS if k in artifact.metrics}
    return replace(artifact, threshold=threshold, metrics=metrics | kept)


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a random positive outscores a random negative), ties counted half."""
    if not positives or not negatives:
        return None
    ranked = np.argsort(np.argsort(np.concatenate([positives, negatives]), kind="stable"), kind="stable") + 1.0
    values = np.concatenate([positives, negatives])
    for v in np.unique(values):  # average ranks over ties
        tied = values == v
        ranked[tied] = ranked[tied].mean()
    n_pos, n_neg = len(positives), len(negatives)
    return round(float((ranked[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)), 4)
