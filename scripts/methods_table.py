#!/usr/bin/env python
"""One methods table from `scripts/evaluate.py --json` files: every method scored on the cases all the runs share.

Runs measured on different slices of a split cannot be compared row by row; the cases they have in common can.
Each argument is a method's label and one or more JSON files of its runs (`label=a.json,b.json`); the table has
one row per method, EM / TF for each probe family, over the case ids present in every method's runs (per-probe
outcomes from the files' "cases"). Nothing is run.

    .venv/bin/python scripts/methods_table.py gate=docs/figures/pipeline-200-batching-2026-12-03b.json \\
        mend=docs/figures/mend-val50-2026-12-03.json kn=docs/figures/kn-val10-2026-12-03.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

FAMILIES = ("reliability", "generalization", "locality", "object_neighbourhood")


def probes_by_case(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """case id → its scored probes, over the runs' files (a case in two files keeps the later file's probes)."""
    cases: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        for runs in json.loads(path.read_text())["cases"].values():
            for case in runs:
                cases[case["case_id"]] = case["probes"]
    return cases


def family_scores(probes: list[dict[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """family → (EM rate, mean TF, probes) over the probes given."""
    em: dict[str, list[float]] = defaultdict(list)
    tf: dict[str, list[float]] = defaultdict(list)
    for probe in probes:
        em[probe["category"]].append(float(probe["em"]))
        tf[probe["category"]].append(float(probe["tf"]))
    return {family: (sum(em[family]) / len(em[family]), sum(tf[family]) / len(tf[family]), len(em[family]))
            for family in em}


def table(methods: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    shared = sorted(set.intersection(*(set(cases) for cases in methods.values())), key=int)
    if not shared:
        raise SystemExit("the runs share no case")
    ids = ", ".join(shared) if len(shared) <= 12 else f"{shared[0]} to {shared[-1]}"
    lines = [f"Cases shared by every run: {len(shared)} (case ids {ids}).", "",
             "| method | " + " | ".join(f"{f.replace('_', ' ')} EM / TF" for f in FAMILIES) + " |",
             "|---|" + "---|" * len(FAMILIES)]
    for label, cases in methods.items():
        scores = family_scores([probe for case_id in shared for probe in cases[case_id]])
        cells = [f"{scores[f][0]:.2f} / {scores[f][1]:.2f}" if f in scores else "—" for f in FAMILIES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=FILE[,FILE...]")
    args = parser.parse_args()
    methods = {}
    for run in args.runs:
        label, _, files = run.partition("=")
        if not files:
            parser.error(f"{run!r}: give LABEL=FILE[,FILE...]")
        methods[label] = probes_by_case([Path(f) for f in files.split(",")])
    print(table(methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
