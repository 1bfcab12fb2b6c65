"""Aggregates probe results into the summary, the markdown table and the plots."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.evaluation.runner import CATEGORIES, KEEP_CATEGORIES, CaseResult, ProbeResult
from editdata.cases import PORTABILITY_KINDS
from editdata.metrics import mean_or_none, percentile

# The gate should send these to an in-scope route, and these to the base route.
GATE_POSITIVE = ("reliability", "generalization")
# The object neighbourhood (issue 24) is a negative too, but its rate is reported apart so that the figure above
# stays comparable with runs from before that family existed.
GATE_NEGATIVE = ("locality", "same_subject")
GATE_NEGATIVE_APART = "object_neighbourhood"
# Reported by kind as well (issue 24): portability by its probes' kind, and the reverse question as a kind of its own.
KIND_CATEGORIES = ("portability", "reverse")
KIND_ORDER = (*PORTABILITY_KINDS, "reverse")


def route_label(probe: ProbeResult) -> str:
    """The route that answered, marking base answers the counterfactual model handed over (gate said in scope) and
    in-scope answers that read further edits than the one that answered."""
    if probe.abstained:
        return f"{probe.route} (abstained)"
    if probe.related_edit_ids:
        return f"{probe.route} (+{len(probe.related_edit_ids)} related)"
    return probe.route


def kind_label(probe: ProbeResult) -> str:
    """A probe's row in the by-kind report: its kind, or its category when it has none (reverse)."""
    return probe.kind or probe.category


def by_kind(probes: Sequence[ProbeResult]) -> dict[str, dict[str, Any]]:
    """For the probes of KIND_CATEGORIES: kind → probes (n), exact match, teacher-forced and route counts, in
    KIND_ORDER (any other kind after)."""
    groups: dict[str, list[ProbeResult]] = defaultdict(list)
    for p in probes:
        if p.category in KIND_CATEGORIES:
            groups[kind_label(p)].append(p)
    order = [k for k in KIND_ORDER if k in groups] + sorted(set(groups) - set(KIND_ORDER))
    return {k: {"n": len(groups[k]), "em": mean_or_none(float(p.em) for p in groups[k]),
                "tf": mean_or_none(p.tf for p in groups[k]),
                "routes": dict(Counter(route_label(p) for p in groups[k]))} for k in order}


def summarize(
    results: Sequence[CaseResult], method: str, seconds: float, apply_seconds: Sequence[float] = (),
    applied_edits: int = 0,
) -> dict[str, Any]:
    """One flat summary: `<category>_em` and `<category>_tf` (None without probes), routes, gate errors, latency,
    and for parametric methods the time of each ApplyParametric call (`apply_seconds`) and per edit written
    (`applied_edits` over all the calls)."""
    probes = [p for r in results for p in r.probes]
    skipped = [r for r in results if r.skipped is not None]
    summary: dict[str, Any] = {"n": len(results) - len(skipped), "method": method, "skipped": len(skipped)}
    for category in CATEGORIES:
        mine = [p for p in probes if p.category == category]
        summary[f"{category}_em"] = mean_or_none(float(p.em) for p in mine)
        summary[f"{category}_tf"] = mean_or_none(p.tf for p in mine)
    for category in KEEP_CATEGORIES:  # set aside: probes that ask an edited fact, another edit's or the case's own
        mine = [p for p in probes if p.category == category]
        kept = [p for p in mine if not (p.asks_other_edit or p.asks_own_edit)]
        summary[f"{category}_asks_other_edit"] = sum(p.asks_other_edit for p in mine)
        summary[f"{category}_asks_own_edit"] = sum(p.asks_own_edit for p in mine)
        summary[f"{category}_asks_edited_fact"] = len(mine) - len(kept)  # either or both
        summary[f"{category}_em_excl_edited_facts"] = mean_or_none(float(p.em) for p in kept)
        summary[f"{category}_tf_excl_edited_facts"] = mean_or_none(p.tf for p in kept)
    summary["kinds"] = by_kind(probes)
    summary["fluency"] = mean_or_none(r.fluency for r in results if r.fluency is not None)
    summary["routes"] = {c: dict(Counter(route_label(p) for p in probes if p.category == c)) for c in CATEGORIES
                         if any(p.category == c for p in probes)}
    # The gate's own errors: a query it let in counts as in scope even when the counterfactual model abstained.
    positives = [p for p in probes if p.category in GATE_POSITIVE]
    negatives = [p for p in probes if p.category in GATE_NEGATIVE]
    summary["gate_false_negative_rate"] = mean_or_none(float(p.route == "base" and not p.abstained) for p in positives)
    summary["gate_false_positive_rate"] = mean_or_none(float(p.route != "base" or p.abstained) for p in negatives)
    summary[f"gate_false_positive_rate_{GATE_NEGATIVE_APART}"] = mean_or_none(
        float(p.route != "base" or p.abstained) for p in probes if p.category == GATE_NEGATIVE_APART)
    by_route: dict[str, list[float]] = defaultdict(list)
    for p in probes:
        by_route[p.route].append(p.latency_ms)
    summary["latency_ms"] = {
        route: {"p50": percentile(v, 50), "p99": percentile(v, 99), "n": len(v)} for route, v in by_route.items()
    }
    summary["parametric_apply_s"] = (
        {"p50": percentile(apply_seconds, 50), "max": max(apply_seconds), "n": len(apply_seconds),
         "total": sum(apply_seconds), "per_edit": sum(apply_seconds) / applied_edits if applied_edits else None}
        if apply_seconds else None
    )
    summary["seconds"] = seconds
    return summary


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [f"method `{summary['method']}`, {summary['n']} cases, {summary['seconds']:.0f} s", ""]
    if summary["skipped"]:
        lines += [f"{summary['skipped']} more cases skipped: the server refused their edits (see the JSON).", ""]
    lines += [
        "| metric | exact match (greedy) | teacher-forced |",
        "|---|---|---|",
    ]
    for category in CATEGORIES:
        em, tf = summary[f"{category}_em"], summary[f"{category}_tf"]
        if em is not None:
            lines.append(f"| {category} | {em:.3f} | {tf:.3f} |")
    for category in KEEP_CATEGORIES:
        other, own = summary[f"{category}_asks_other_edit"], summary[f"{category}_asks_own_edit"]
        if asked := summary[f"{category}_asks_edited_fact"]:
            em, tf = (summary[f"{category}_{m}_excl_edited_facts"] for m in ("em", "tf"))
            figures = "— | —" if em is None else f"{em:.3f} | {tf:.3f}"  # every probe asked an edited fact
            lines.append(f"| {category} without the {asked} probes asking an edited fact ({other} another "
                         f"edit's, {own} their own edit's) | {figures} |")
    if summary["fluency"] is not None:
        lines.append(f"| fluency (n-gram entropy) | {summary['fluency']:.3f} | |")
    if summary.get("kinds"):
        lines += ["", "| portability and reverse by kind | probes | exact match (greedy) | teacher-forced | routes |",
                  "|---|---|---|---|---|"]
        lines += [f"| {kind} | {k['n']} | {k['em']:.3f} | {k['tf']:.3f} | "
                  f"{', '.join(f'{r}: {n}' for r, n in sorted(k['routes'].items()))} |"
                  for kind, k in summary["kinds"].items()]
    lines += ["", "| category | routes |", "|---|---|"]
    lines += [f"| {c} | {', '.join(f'{r}: {n}' for r, n in sorted(routes.items()))} |"
              for c, routes in summary["routes"].items()]
    for key in ("gate_false_negative_rate", "gate_false_positive_rate",
                f"gate_false_positive_rate_{GATE_NEGATIVE_APART}"):
        if summary.get(key) is not None:
            lines.append(f"\n{key.replace('_', ' ')}: {summary[key]:.3f}")
    if summary["parametric_apply_s"] is not None:
        p50, longest, calls, per_edit = (summary["parametric_apply_s"].get(k) for k in ("p50", "max", "n", "per_edit"))
        lines.append(f"\nApplyParametric: p50 {p50:.1f} s, max {longest:.1f} s over {calls} calls"
                     + (f", {per_edit:.1f} s per edit" if per_edit is not None else ""))
    if summary.get("server_peak_rss_mb") is not None:
        lines.append(f"\nserver peak RSS: {summary['server_peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The one-line JSON summary's keys."""
    keys = ["n", "skipped", "method"]
    for category in ("reliability", "generalization", "locality", "object_neighbourhood", "portability"):
        keys += [f"{category}_em", f"{category}_tf"]
    keys += ["locality_em_excl_edited_facts", "same_subject_em", "same_subject_em_excl_edited_facts"]
    return {k: summary[k] for k in keys} | {"seconds": round(summary["seconds"], 1)}


def plot(summaries: Sequence[dict[str, Any]], results: Sequence[CaseResult], directory: Path) -> list[Path]:
    """metrics against T (when several T were run) and a latency histogram per route, as PNG files."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plots needs matplotlib: pip install matplotlib") from None
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if len(summaries) > 1:  # each figure against T, exact match and teacher-forced
        figures = ("reliability", "generalization", "locality")
        fig, axes = plt.subplots(1, len(figures), figsize=(5 * len(figures), 4), sharey=True)
        ts = [s["sequential"] for s in summaries]
        for ax, figure in zip(axes, figures, strict=True):
            for measure, style in (("em", "-"), ("tf", "--")):
                ax.plot(ts, [s[f"{figure}_{measure}"] for s in summaries], style, marker="o", label=measure)
            ax.set_xscale("log")
            ax.set_xlabel("edits in memory (T)")
            ax.set_ylim(0, 1.02)
            ax.set_title(figure)
            ax.legend()
        fig.suptitle(f"method {summaries[0]['method']}: sequential editing, scored once after T edits")
        written.append(directory / "metrics_vs_T.png")
        fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(6, 4))
    by_route: dict[str, list[float]] = defaultdict(list)
    for p in (p for r in results for p in r.probes):
        by_route[p.route].append(p.latency_ms)
    for route, values in sorted(by_route.items()):
        ax.hist(values, bins=40, alpha=0.6, label=f"{route} (n={len(values)})")
    ax.set_xlabel("generation latency per probe (ms)")
    ax.legend()
    written.append(directory / "latency_hist.png")
    fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    return written
