"""The object gate (issue 24 item 1): trained on `object_pairs`, its threshold chosen on held-out train edits, and
measured on the dev files as the server would meet it: every edit of a split in memory, a query's candidates the
edits whose new object it names (and whose subject it does not), each scored on the edit read from its object.

Train: warm-started from the main gate's interaction weights (the same features, read the other way round).
Threshold: the lowest at which at most `HELD_OUT_FPR` of the held-out train edits' negatives pass, so that the
dev files choose nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from editdata.cases import Case
from editdata.probes import with_object_neighbourhood
from editdata.readers import load_cases
from scope_classifier.evaluate import OBJECT_SPLITS
from scope_classifier.object_pairs import build_object_pairs, names_object, reversed_edit
from scope_classifier.pairs import EditText, Pair
from scope_classifier.train import Progress, encode, features, fit_interaction
from server.gate.artifact import GateArtifact, save_artifact
from server.gate.classifier import predict_pairs
from server.gate.features import EditView, edit_view
from server.memory.embed import SentenceEncoder
from server.types import EncodedText, name_key, named_keys, object_key

log = logging.getLogger(__name__)
HELD_OUT_SHARE = 0.15
HELD_OUT_FPR = 0.01


def train_object_gate(
    data_dir: Path, out: Path, encoder_name: str, init: GateArtifact, cache_dir: Path, seed: int = 0,
    epochs: int = 2, lr: float = 3e-4, progress: Progress | None = None,
) -> dict[str, Any]:
    """Trains on the train edits outside a held-out share, chooses the threshold on that share, saves."""
    encoder = SentenceEncoder(encoder_name)
    edits, pairs = build_object_pairs(data_dir, seed)
    held = set(random.Random(seed).sample(range(len(edits)), int(len(edits) * HELD_OUT_SHARE)))
    train_pairs = [p for p in pairs if p.edit not in held]
    held_pairs = [p for p in pairs if p.edit in held]
    encoded = encode(encoder, encoder_name, [p.query for p in pairs] + [e.prompt for e in edits], cache_dir, progress)
    views = [edit_view(encoded[e.prompt], e.subject, e.target_new) for e in edits]
    x = features(train_pairs, views, encoded)
    log.info("object gate: %d edits, %d train pairs (%d positive), %d held out", len(edits), len(train_pairs),
             sum(p.label for p in train_pairs), len(held_pairs))
    artifact = fit_interaction(train_pairs, x, views, encoded, encoder_name, seed, epochs, lr=lr, progress=progress,
                               init=init)
    scores = pair_scores(artifact, held_pairs, views, encoded)
    labels = np.array([p.label for p in held_pairs])
    threshold = lowest_threshold(scores[labels == 0], HELD_OUT_FPR)
    metrics = {"held_out": held_out_metrics(scores, labels, threshold),
               "pairs": {k: sum(p.kind == k for p in train_pairs) for k in sorted({p.kind for p in pairs})},
               "init": init.metrics.get("split", ""), "epochs": epochs, "lr": lr}
    artifact = replace(artifact, threshold=threshold, metrics=metrics)
    save_artifact(artifact, out)
    return metrics


def pair_scores(artifact: GateArtifact, pairs: Sequence[Pair], views: Sequence[EditView],
                encoded: dict[str, EncodedText]) -> np.ndarray:
    """P(in scope) of each pair: (n,)."""
    out = np.zeros(len(pairs))
    for i, p in enumerate(pairs):
        query = encoded[p.query]
        out[i] = predict_pairs(artifact, query, [views[p.edit]], [float(query.vector @ views[p.edit].prompt_vector)])[0]
    return out


def lowest_threshold(negatives: np.ndarray, fpr: float) -> float:
    """The lowest threshold that at most `fpr` of the negatives' scores reach."""
    ordered = np.sort(negatives)[::-1]
    allowed = int(np.floor(fpr * len(ordered)))
    return float(ordered[allowed]) + 1e-6 if allowed < len(ordered) else 0.0


def held_out_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    return {"threshold": round(threshold, 4), "recall": round(float((scores[labels == 1] >= threshold).mean()), 4),
            "fpr": round(float((scores[labels == 0] >= threshold).mean()), 4),
            "positives": int(labels.sum()), "negatives": int(len(labels) - labels.sum())}


@dataclass(frozen=True)
class ObjectProbe:
    query: str
    family: str  # reverse, logical (positives); object_neighbourhood, neighbourhood, same_subject (negatives)
    own: int  # index of the probe's own edit in the split


def dev_probes(cases: Sequence[Case]) -> list[ObjectProbe]:
    """Every probe of the cases that the object gate could meet, with its family."""
    probes = []
    for i, case in enumerate(cases):
        families = (("reverse", case.reverse), ("logical", [p for p in case.portability if p.kind == "logical"]),
                    ("object_neighbourhood", case.object_neighbourhood), ("neighbourhood", case.locality),
                    ("same_subject", case.same_subject))
        probes += [ObjectProbe(p.prompt, family, i) for family, group in families for p in group]
    return probes


POSITIVE_FAMILIES = ("reverse", "logical")


def as_erased(case: Case) -> Case:
    """The case as an erase edit is keyed: by the answer it erases, its `target_true`, in `target_new`'s place."""
    return replace(case, edits=tuple(replace(e, target_new=e.target_true or "") for e in case.edits))


def evaluate_object_gate(
    artifacts: dict[str, GateArtifact], data_dir: Path, split: str, limit: int | None, encoder_name: str,
    cache_dir: Path, erased: bool = False,
) -> dict[str, Any]:
    """Per family and artifact: how many probes name some edit's object, and the share the gate lets in at its
    threshold (for positives: with the probe's own edit the best candidate). Every edit of the split is a
    candidate, not only the newest `top_k` the server takes per query. `erased`: the edits keyed by the answers they
    erase (`as_erased`), the object neighbourhood built around those."""
    cases = load_cases(data_dir / OBJECT_SPLITS[split])[1]
    cases = with_object_neighbourhood([as_erased(c) for c in cases] if erased else cases)[:limit]
    edits = [EditText(c.edits[0].subject, c.edits[0].prompt, c.edits[0].target_new) for c in cases]
    keyed = [i for i, e in enumerate(edits) if names_object(e)]
    reversed_edits = {i: reversed_edit(edits[i]) for i in keyed}
    probes = dev_probes(cases)
    encoder = SentenceEncoder(encoder_name)
    texts = [p.query for p in probes] + [e.prompt for e in reversed_edits.values()]
    encoded = encode(encoder, encoder_name, texts, cache_dir, None)
    views = {i: edit_view(encoded[e.prompt], e.subject, e.target_new) for i, e in reversed_edits.items()}
    report: dict[str, Any] = {"split": OBJECT_SPLITS[split], "erased": erased, "cases": len(cases),
                              "keyed_edits": len(keyed)}
    for name, artifact in artifacts.items():
        rows: dict[str, list[int]] = {}
        for probe in probes:
            named = set(named_keys(probe.query))  # as the server finds candidates (ScopeCheck._by_object)
            candidates = [i for i in keyed if object_key(edits[i].target_new) in named
                          and name_key(edits[i].subject) not in named]
            row = rows.setdefault(probe.family, [0, 0, 0])  # probes, with a candidate, let in
            row[0] += 1
            if not candidates:
                continue
            row[1] += 1
            query = encoded[probe.query]
            scores = predict_pairs(artifact, query, [views[i] for i in candidates],
                                   [float(query.vector @ views[i].prompt_vector) for i in candidates])
            best = int(np.argmax(scores))
            right = probe.family not in POSITIVE_FAMILIES or candidates[best] == probe.own
            if scores[best] >= artifact.threshold and right:
                row[2] += 1
        report[name] = {family: {"probes": n, "named": found, "let_in": let_in,
                                 "share": round(let_in / n, 4) if n else None}
                        for family, (n, found, let_in) in rows.items()} | {"threshold": artifact.threshold}
    return report
