#!/usr/bin/env python
"""The gate's routing alone on the insert and patch fixtures (issue 26): what the router would do before the
counterfactual model answers, in a minute instead of the quarter hour `scripts/eval_lifecycle.py` takes.

    .venv/bin/python scripts/measure_gate_fixtures.py                         # the server's default gates
    .venv/bin/python scripts/measure_gate_fixtures.py --no-unfamiliar-gate    # gate v2 scores every kind
    .venv/bin/python scripts/measure_gate_fixtures.py --unfamiliar-gate-artifact /tmp/gate.npz

The gates are built as the server builds them (server.app.build_gate). Each entity of
tests/fixtures/insert_entities.json is added (both facts, one at a time, supersession on, kind insert) to its own
namespace; each rule of tests/fixtures/nl_patches.json likewise (kind patch, its examples as key texts). A probe
counts as routed when the gate's best edit is the one it asks (insert) or the patch (covered), at or above the
threshold. Through the real server these figures equalled the exact-match ones wherever the counterfactual model
answered what it was given (docs/BENCHMARKS.md, "Gate v4 for insert and patch edits").
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from server.app import build_gate, supersede_threshold
from server.config import Config
from server.memory.edit_memory import EditMemory
from server.memory.embed import SentenceEncoder
from server.scope import ScopeCheck
from server.types import EditKind, EditSpec

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def measure(scope: ScopeCheck, threshold: float) -> dict[str, Any]:
    def routed(namespace: str, query: str, edit_id: str | None) -> bool:
        hit, p, _ = scope.best(namespace, query)
        return hit is not None and p >= threshold and (edit_id is None or hit.edit.id == edit_id)

    superseded, reliability, paraphrase = 0, [], []
    for i, entity in enumerate(json.loads((FIXTURES / "insert_entities.json").read_text())):
        namespace = f"insert-{i}"
        facts = entity["facts"]
        edits = [scope.add(namespace, [EditSpec(entity["subject"], f["prompt"], f["target"], kind=EditKind.INSERT)])[0]
                 for f in facts]
        superseded += any(e.supersedes for e in edits)
        for edit, fact in zip(edits, facts, strict=True):
            reliability.append(routed(namespace, fact["prompt"], edit.id))
            paraphrase += [routed(namespace, p, edit.id) for p in fact["paraphrases"]]
    covered, uncovered = [], []
    for i, rule in enumerate(json.loads((FIXTURES / "nl_patches.json").read_text())):
        namespace = f"patch-{i}"
        spec = EditSpec(rule["subject"], rule["rule"], "", paraphrases=tuple(rule["examples"]), kind=EditKind.PATCH)
        (patch,) = scope.add(namespace, [spec])
        covered += [routed(namespace, q["prompt"], patch.id) for q in rule["covered"]]
        uncovered.append(routed(namespace, rule["uncovered"]["prompt"], None))
    return {
        "insert_entities_with_a_fact_superseded": superseded,
        "insert_reliability_routed": sum(reliability) / len(reliability),
        "insert_paraphrase_routed": sum(paraphrase) / len(paraphrase),
        "patch_covered_let_in": sum(covered) / len(covered),
        "patch_uncovered_let_in": sum(uncovered),
        "patch_uncovered": len(uncovered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gate-artifact", type=Path)
    parser.add_argument("--unfamiliar-gate-artifact", type=Path)
    parser.add_argument("--no-unfamiliar-gate", dest="unfamiliar_gate", action="store_false")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--supersede-threshold", type=float)
    args = parser.parse_args()
    config = Config(gate_artifact=args.gate_artifact, unfamiliar_gate_artifact=args.unfamiliar_gate_artifact,
                    unfamiliar_gate=args.unfamiliar_gate, threshold=args.threshold,
                    supersede_threshold=args.supersede_threshold)
    encoder = SentenceEncoder(config.encoder)
    gate, threshold, _ = build_gate(config, encoder)
    with tempfile.TemporaryDirectory(prefix="editcache-gate-fixtures-") as tmp:
        memory = EditMemory(Path(tmp), encoder, config.encoder)
        scope = ScopeCheck(encoder, memory, gate, config.top_k, threshold=threshold,
                           supersede_threshold=supersede_threshold(config, gate, threshold))
        figures = measure(scope, threshold)
        memory.close()
    print(json.dumps({"threshold": threshold, "unfamiliar_gate": args.unfamiliar_gate} | figures))


if __name__ == "__main__":
    main()
