#!/usr/bin/env python
"""One methods table from `scripts/evaluate.py --json` files: every method scored on the cases all the runs share.

Runs measured on different slices of a split cannot be compared row by row; the cases they have in common can.
Each argument is a method's label and one or more JSON files of its runs (`label=a.json,b.json`); the table has
one row per method, EM / TF for each probe family, over the case ids present in every method's runs (per-probe
outcomes from the files' "cases"), then each method's time per edit (ApplyParametric's median) and the server's
peak RSS, from the runs' summaries (whole runs, not only the shared cases). Nothing is run.

    .venv/bin/python scripts/methods_table.py gate=docs/figures/pipeline-200-batching-2026-12-03b.json \\
        mend=docs/figures/mend-val50-2026-12-03.json kn=docs/figures/kn-val10-2026-12-03.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The table's columns, in this order, those any run has probes of (CounterFact: no same subject or portability).
FAMILIES = ("reliability", "generalization", "portability", "locality", "same_subject", "object_neighbourhood")


@dataclass(frozen=True)
class Runs:
    """One method's runs: case id → its scored probes (a case in two files keeps the later file's), and costs."""

    cases: dict[str, list[dict[str, Any]]]
    apply_s_p50: float | None  # the largest of the runs' medians; None for a route (no ApplyParametric)
    peak_rss_mb: float | None


def read_runs(paths: list[Path]) -> Runs:
    cases: dict[str, list[dict[str, Any]]] = {}
    apply_s: list[float] = []
    rss: list[float] = []
    for path in paths:
        run = json.loads(path.read_text())
        for by_sequential in run["cases"].values():
            for case in by_sequential:
                cases[case["case_id"]] = case["probes"]
        for summary in run["summaries"]:
            if summary.get("parametric_apply_s"):
                apply_s.append(summary["parametric_apply_s"]["p50"])
            if summary.get("server_peak_rss_mb"):
                rss.append(summary["server_peak_rss_mb"])
    return Runs(cases, max(apply_s) if apply_s else None, max(rss) if rss else None)


def family_scores(probes: list[dict[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """family → (EM rate, mean TF, probes) over the probes given."""
    em: dict[str, list[float]] = defaultdict(list)
    tf: dict[str, list[float]] = defaultdict(list)
    for probe in probes:
        em[probe["category"]].append(float(probe["em"]))
        tf[probe["category"]].append(float(probe["tf"]))
    return {family: (sum(em[family]) / len(em[family]), sum(tf[family]) / len(tf[family]), len(em[family]))
            for family in em}


def table(methods: dict[str, Runs]) -> str:
    shared = sorted(set.intersection(*(set(runs.cases) for runs in methods.values())), key=int)
    if not shared:
        raise SystemExit("the runs share no case")
    ids = ", ".join(shared) if len(shared) <= 12 else f"{shared[0]} to {shared[-1]}"
    scores = {label: family_scores([probe for case_id in shared for probe in runs.cases[case_id]])
              for label, runs in methods.items()}
    families = [f for f in FAMILIES if any(f in s for s in scores.values())]
    lines = [f"Cases shared by every run: {len(shared)} (case ids {ids}).", "",
             "| method | " + " | ".join(f"{f.replace('_', ' ')} EM / TF" for f in families)
             + " | s per edit (p50) | server peak RSS MB |",
             "|---|" + "---|" * (len(families) + 2)]
    for label, runs in methods.items():
        cells = [f"{scores[label][f][0]:.2f} / {scores[label][f][1]:.2f}" if f in scores[label] else "—"
                 for f in families]
        cells += [f"{runs.apply_s_p50:.1f}" if runs.apply_s_p50 is not None else "—",
                  f"{runs.peak_rss_mb:,.0f}" if runs.peak_rss_mb is not None else "—"]
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
        methods[label] = read_runs([Path(f) for f in files.split(",")])
    print(table(methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
