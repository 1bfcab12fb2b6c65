#!/usr/bin/env python
"""Measure the supersede rule (server/scope.py, ScopeCheck.superseded): how often a new edit of the same fact
replaces the old one, and how often one of another relation of the same subject wrongly does, at each of several
`supersede_threshold` values. The train split chooses the shipped threshold; the dev split only reports.

    .venv/bin/python scripts/measure_supersede.py --split train --json docs/figures/supersede-threshold-train.json
    .venv/bin/python scripts/measure_supersede.py --split dev
    .venv/bin/python scripts/measure_supersede.py --split dev --gate-artifact artifacts/gate/gate-v4.npz

Pairs, each an old edit in memory and a new edit with the same subject:
- train: same fact, reworded (should supersede): CounterFact train `rephrase_prompt`, zsRE train-1k `rephrase`;
  another relation (should not): KnowEdit WikiData counterfact and recent train `Relation_Specificity` prompts;
- dev: same fact: zsRE dev (KnowEdit) `rephrase_prompt`, CounterFact val `rephrase_prompt`, MQuAKE dev each
  rewrite's `question` against its cloze `prompt` (a correction asked as a question); another relation: zsRE dev
  `Relation_Specificity` prompts and MQuAKE dev rewrites of the same subject with another relation_id.
Prints a JSON summary: per source and threshold, the share of pairs superseded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server.config import Config
from server.gate.artifact import DEFAULT_ARTIFACT, load_artifact
from server.gate.classifier import ClassifierGate
from server.memory.edit_memory import EditMemory
from server.memory.embed import SentenceEncoder
from server.scope import ScopeCheck
from server.types import EditSpec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
Pair = tuple[EditSpec, EditSpec]  # (old, new)


def zsre_pairs(path: Path) -> Iterator[tuple[str, Pair]]:
    for r in json.loads(path.read_text()):
        old = EditSpec(r["subject"], r["prompt"], r["target_new"])
        yield "same fact: zsre rephrase", (old, EditSpec(r["subject"], r["rephrase_prompt"], "x"))
        for probe in r.get("locality", {}).get("Relation_Specificity", []):
            yield "other relation: zsre relation specificity", (old, EditSpec(r["subject"], probe["prompt"], "x"))


def zsre_mend_pairs(path: Path) -> Iterator[tuple[str, Pair]]:
    for r in json.loads(path.read_text()):
        old = EditSpec(r["subject"], r["src"], r["alt"])
        yield "same fact: zsre train rephrase", (old, EditSpec(r["subject"], r["rephrase"], "x"))


def knowedit_pairs(path: Path) -> Iterator[tuple[str, Pair]]:
    for r in json.loads(path.read_text()):
        old = EditSpec(r["subject"], r["prompt"], str(r["target_new"]))
        for probe in (r.get("locality") or {}).get("Relation_Specificity", []):
            new = EditSpec(r["subject"], probe["prompt"], "x")
            yield f"other relation: {path.stem} relation specificity", (old, new)


def counterfact_pairs(path: Path) -> Iterator[tuple[str, Pair]]:
    for r in json.loads(path.read_text()):
        old = EditSpec(r["subject"], r["prompt"], r["target_new"])
        yield f"same fact: counterfact {path.stem} rephrase", (old, EditSpec(r["subject"], r["rephrase_prompt"], "x"))


def mquake_pairs(path: Path) -> Iterator[tuple[str, Pair]]:
    rewrites: dict[str, list[dict[str, Any]]] = {}  # subject → its rewrites, as the JSON has them
    for record in json.loads(path.read_text()):
        for rw in record["requested_rewrite"]:
            old = EditSpec(rw["subject"], rw["prompt"].format(rw["subject"]), rw["target_new"]["str"])
            yield "same fact: mquake question", (old, EditSpec(rw["subject"], rw["question"], "x"))
            rewrites.setdefault(rw["subject"], []).append(rw)
    for subject, rws in rewrites.items():
        for a in rws:
            for b in rws:
                if a["relation_id"] != b["relation_id"]:
                    old = EditSpec(subject, a["prompt"].format(subject), a["target_new"]["str"])
                    yield "other relation: mquake", (old, EditSpec(subject, b["question"], "x"))


def sources(data: Path, split: str) -> list[Iterator[tuple[str, Pair]]]:
    if split == "train":
        return [counterfact_pairs(data / "counterfact" / "train.json"),
                zsre_mend_pairs(data / "zsre" / "train-1k.json"),
                knowedit_pairs(data / "knowedit" / "wiki_counterfact_train.json"),
                knowedit_pairs(data / "knowedit" / "wiki_recent_train.json")]
    return [zsre_pairs(data / "zsre" / "dev.json"), counterfact_pairs(data / "counterfact" / "val.json"),
            mquake_pairs(data / "mquake" / "dev.json")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="measure_supersede.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--split", choices=("train", "dev"), default="train")
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.235, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    parser.add_argument("--limit", type=int, default=300, help="pairs per source at most")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the summary here")
    parser.add_argument("--gate-artifact", type=Path, default=DEFAULT_ARTIFACT,
                        help=f"the gate artifact to measure (default: {DEFAULT_ARTIFACT.name}, the shipped one)")
    args = parser.parse_args(argv)
    artifact = load_artifact(args.gate_artifact)
    encoder = SentenceEncoder(Config().encoder)
    scores: dict[str, list[float]] = {}  # label → the gate's score of each pair
    with tempfile.TemporaryDirectory() as tmp:
        memory = EditMemory(Path(tmp), encoder, Config().encoder)
        scope = ScopeCheck(encoder, memory, ClassifierGate(artifact, encoder), top_k=4)
        for n, (label, (old, new)) in enumerate(pair for source in sources(args.data, args.split) for pair in source):
            pairs = scores.setdefault(label, [])
            if len(pairs) >= args.limit:
                continue
            namespace = f"pair-{n}"  # one old edit per namespace: nothing else to supersede
            memory.add(namespace, [old])
            ((_, p),) = scope.same_fact_scores(namespace, new)
            pairs.append(p)
        memory.close()
    summary = {
        "split": args.split, "artifact": args.gate_artifact.name, "encoder": Config().encoder,
        "superseded": {label: {"pairs": len(ps), **{f"{t:g}": round(sum(p >= t for p in ps) / len(ps), 3)
                                                    for t in args.thresholds}}
                       for label, ps in scores.items()},
    }
    print(json.dumps(summary, indent=2))
    if args.json_path:
        args.json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
