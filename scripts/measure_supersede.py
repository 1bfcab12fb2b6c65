#!/usr/bin/env python
"""Measure the supersede rule (server/scope.py, ScopeCheck.superseded) on dev data: how often a new edit of the same
fact replaces the old one, and how often one of another relation of the same subject wrongly does.

    .venv/bin/python scripts/measure_supersede.py            # the shipped gate and encoder, the artifact's threshold

Pairs, each an old edit in memory and a new edit with the same subject:
- same fact, reworded (should supersede): zsRE dev (KnowEdit) `rephrase_prompt`, CounterFact val `rephrase_prompt`,
  MQuAKE dev each rewrite's `question` against its cloze `prompt` (a correction asked as a question);
- another relation (should not): zsRE dev `Relation_Specificity` prompts (same subject, other relations) and MQuAKE
  dev rewrites of the same subject with another relation_id.
Prints a JSON summary.
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


def counterfact_pairs(path: Path) -> Iterator[tuple[str, Pair]]:
    for r in json.loads(path.read_text()):
        old = EditSpec(r["subject"], r["prompt"], r["target_new"])
        yield "same fact: counterfact rephrase", (old, EditSpec(r["subject"], r["rephrase_prompt"], "x"))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="measure_supersede.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threshold", type=float, help="default: the gate artifact's")
    parser.add_argument("--limit", type=int, default=300, help="pairs per source at most")
    args = parser.parse_args(argv)
    artifact = load_artifact(DEFAULT_ARTIFACT)
    encoder = SentenceEncoder(Config().encoder)
    threshold = artifact.threshold if args.threshold is None else args.threshold
    sources = [zsre_pairs(args.data / "zsre" / "dev.json"), counterfact_pairs(args.data / "counterfact" / "val.json"),
               mquake_pairs(args.data / "mquake" / "dev.json")]
    counts: dict[str, list[int]] = {}  # label → [superseded, pairs]
    with tempfile.TemporaryDirectory() as tmp:
        memory = EditMemory(Path(tmp), encoder, Config().encoder)
        scope = ScopeCheck(encoder, memory, ClassifierGate(artifact, encoder), top_k=4, threshold=threshold)
        for n, (label, (old, new)) in enumerate(pair for source in sources for pair in source):
            tally = counts.setdefault(label, [0, 0])
            if tally[1] >= args.limit:
                continue
            namespace = f"pair-{n}"  # one old edit per namespace: nothing else to supersede
            (stored,) = memory.add(namespace, [old])
            tally[0] += scope.superseded(namespace, [new]) == [stored.id]
            tally[1] += 1
        memory.close()
    summary = {"threshold": threshold, "artifact": DEFAULT_ARTIFACT.name, "encoder": Config().encoder,
               "superseded": {label: {"rate": round(k / n, 3), "pairs": n} for label, (k, n) in counts.items()}}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
