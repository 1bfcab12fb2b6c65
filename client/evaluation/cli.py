"""`scripts/evaluate.py` and `editctl eval`: evaluate an editing method on a benchmark file."""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from client import EditcacheClient, ParametricOptions
from client.evaluation.report import headline, markdown_table, plot, summarize
from client.evaluation.runner import (
    METHOD_ROUTES,
    PARAMETRIC_METHODS,
    BaselineCache,
    CaseResult,
    EvalSettings,
    Evaluator,
    ProbeResult,
    reflagged,
)
from client.launch import LocalServer
from client.parametric_cli import parametric_progress_bar
from editdata.cases import Case
from editdata.probes import with_object_neighbourhood
from editdata.readers import FORMATS, load_cases

T = TypeVar("T")


def build_parser(prog: str = "evaluate.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate a knowledge-editing method through the editcache server: reliability, "
        "generalization, locality (neighbourhood, same subject, object neighbourhood: editdata/probes.py), "
        "portability (by kind), reverse and multi-hop, each as exact match under greedy "
        "generation and as teacher-forced token accuracy. The last line of stdout is a JSON summary.",
    )
    parser.add_argument("--data", type=Path, required=True, help="benchmark file (JSON list of records)")
    parser.add_argument("--format", choices=FORMATS, help="record format (default: detected)")
    parser.add_argument("--method", choices=sorted(METHOD_ROUTES), default="gate",
                        help="gate: the full server pipeline; prompt: the edit stated in every prompt; "
                        "ike: retrieved demonstrations and the edit in every prompt; base: no edit")
    parser.add_argument("--addr", help="a running server (default: start one on --model)")
    parser.add_argument("--model", default="gemma-3-270m", help="model for the server this command starts")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra flag for the server this command starts (repeatable), e.g. --server-arg=--top-k=8")
    parser.add_argument("--token", help="bearer token for --addr")
    parser.add_argument("--limit", type=int, help="evaluate the first N cases (after --seed shuffling and --offset)")
    parser.add_argument("--offset", type=int, default=0, help="skip the first N cases (after --seed shuffling): "
                        "slices of one file keep the file's case ids and object-neighbourhood probes")
    parser.add_argument("--seed", type=int, help="shuffle the cases with this seed before --limit")
    parser.add_argument("--sequential", help="T, or T1,T2,...: add T edits, then score those cases (WISE protocol); "
                        "with --json, each T's results are also written to FILE.T<T>.json as soon as it ends")
    parser.add_argument("--batch", type=int, help="parametric methods: edits per ApplyParametric call (MEMIT and "
                        "AlphaEdit write a call's edits at once; ROME, FT and GRACE one after another either way); "
                        "default: all of a block's edits in one call")
    parser.add_argument("--layer", type=int, help="parametric methods that edit one layer (ROME, FT, GRACE, "
                        "T-Patcher, CaliNET, WISE): that layer (default: the server's for the model)")
    parser.add_argument("--fire-at", choices=("last", "subject"),
                        help="T-Patcher, CaliNET: where the neurons fire (default: the server's, the last token)")
    parser.add_argument("--memory-subjects", type=int,
                        help="T-Patcher, CaliNET: other subjects in the neurons' memory (default: the server's, 16)")
    parser.add_argument("--own-subject-questions", type=int,
                        help="T-Patcher, CaliNET: other questions about the edit's subject in the memory "
                        "(default: T-Patcher 8, CaliNET 0)")
    parser.add_argument("--own-subject-tokens", type=int,
                        help="T-Patcher, CaliNET: tokens continuing each memory prompt about the edit's subject "
                        "(default: T-Patcher 24, CaliNET 0)")
    parser.add_argument("--steps", type=int, help="parametric methods that optimise: their steps (default: the "
                        "server's for the method, e.g. T-Patcher's 100)")
    parser.add_argument("--layers", type=int, nargs="+", default=[], help="MEMIT and AlphaEdit: the layers, e.g. "
                        "8 9 10, or 12 (AlphaEdit's projection on ROME's one layer); default: the server's")
    parser.add_argument("--fluency", action="store_true", help="also generate 32 tokens per case for n-gram entropy")
    parser.add_argument("--json", type=Path, dest="json_path", help="write per-case results and summaries here")
    parser.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    parser.add_argument("--from-json", type=Path, help="no server: read a saved --json run of this --data file, "
                        "flag again the probes that ask an edited fact (this version's rule) and print its summaries")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editcache" / "eval",
                        help="where the unedited model's outputs are cached")
    return parser


def select_cases(cases: list[T], seed: int | None, offset: int, limit: int | None) -> list[T]:
    """The cases to run: shuffled by `seed` (when given), then the `limit` after the first `offset`."""
    if offset < 0 or (limit is not None and limit < 0):
        raise SystemExit(f"--offset and --limit must not be negative, got {offset} and {limit}")
    if seed is not None:
        cases = cases.copy()
        random.Random(seed).shuffle(cases)
    return cases[offset : offset + limit if limit else None]


def main(argv: list[str] | None = None, prog: str = "evaluate.py") -> int:
    args = build_parser(prog).parse_args(argv)
    fmt, cases = load_cases(args.data, args.format)
    cases = with_object_neighbourhood(cases)  # from the whole file, so a case's probe is the same in any slice
    cases = select_cases(cases, args.seed, args.offset, args.limit)
    sequential = [int(t) for t in args.sequential.split(",")] if args.sequential else [None]
    if args.from_json:
        if args.json_path or args.plots or args.sequential or args.limit or args.offset or args.seed is not None:
            raise SystemExit("--from-json reads a saved run as it was: leave out --json, --plots, --sequential, "
                             "--limit, --offset and --seed")
        return _summarize_saved(args.from_json, cases)
    print(f"{len(cases)} cases from {args.data} ({fmt}), method {args.method}", file=sys.stderr)

    server: LocalServer | None = None
    with ExitStack() as stack:
        addr = args.addr
        if addr is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="editcache-eval-")))
            server = LocalServer(args.model, data_dir, *args.server_arg)
            print(f"starting a server on {args.model} (log: {server.log_path})", file=sys.stderr)
            server.start(timeout_s=900)
            stack.callback(server.stop)
            addr = server.addr
        client = stack.enter_context(EditcacheClient(addr, token=args.token, timeout_s=600))
        info = client.server_info()
        baseline = BaselineCache.for_server(info, args.cache_dir)

        summaries, all_results = [], []
        for t in sequential:
            settings = EvalSettings(method=args.method, sequential=t, fluency=args.fluency, batch=args.batch,
                                    parametric=ParametricOptions(layer=args.layer, layers=tuple(args.layers),
                                                                 steps=args.steps, fire_at=args.fire_at,
                                                                 memory_subjects=args.memory_subjects,
                                                                 own_subject_questions=args.own_subject_questions,
                                                                 own_subject_tokens=args.own_subject_tokens))
            started = time.perf_counter()
            with parametric_progress_bar(disable=args.method not in PARAMETRIC_METHODS) as on_parametric:
                evaluator = Evaluator(client, settings, baseline)
                results = evaluator.run(cases[: t or None] if t else cases, _progress_bar(), on_parametric)
            summary = summarize(results, args.method, time.perf_counter() - started, evaluator.apply_seconds,
                                evaluator.applied_edits)
            summary |= {"sequential": t, "batch": args.batch, "layer": args.layer, "layers": args.layers,
                        "parametric_options": {k: v for k, v in asdict(settings.parametric).items()
                                               if v is not None and v != ()},
                        "data": str(args.data), "format": fmt,
                        "model": info.model, "server_peak_rss_mb": None if server is None else peak_rss_mb(server.pid)}
            summaries.append(summary)
            all_results.append((t, results))
            print(markdown_table(summary))
            print()
            if args.json_path and t is not None:  # a long run keeps each T's figures should a later T fail
                _write_json(args.json_path.with_suffix(f".T{t}.json"), [summary], [(t, results)])

    usage = _peak_memory(local=server is not None)
    print(f"peak RSS: {usage}", file=sys.stderr)
    if args.json_path:
        _write_json(args.json_path, summaries, all_results, usage)
    if args.plots:
        for path in plot(summaries, [r for _, rs in all_results for r in rs], args.plots):
            print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(headline(summaries[-1]) | {"sequential": summaries[-1]["sequential"]}))
    return 0


def _summarize_saved(path: Path, cases: list[Case]) -> int:
    """Each T's summary of a saved run again, its probes flagged by this version's `asks_edited_fact`; the figures
    that need the run itself (time, ApplyParametric, memory) are kept as saved."""
    document = json.loads(path.read_text())
    summaries = []
    for saved, (t, results) in zip(document["summaries"], document["cases"].items(), strict=True):
        read = [CaseResult(**(r | {"probes": [ProbeResult(**p) for p in r["probes"]]})) for r in results]
        flagged = reflagged(read, cases, int(t) if t != "None" else 1)
        again = summarize(flagged, saved["method"], saved["seconds"])
        kept = {k: v for k, v in saved.items() if not k.endswith("_excl_other_edits")}  # keys of the old rule
        summary = kept | {k: v for k, v in again.items() if k not in ("seconds", "parametric_apply_s")}
        summaries.append(summary)
        print(markdown_table(summary))
        print()
    print(json.dumps(headline(summaries[-1]) | {"sequential": summaries[-1].get("sequential")}))
    return 0


def peak_rss_mb(pid: int) -> float | None:
    """A running process's peak resident set so far (VmHWM: the figure getrusage's ru_maxrss gives once it has
    exited), in MB; None where /proc cannot tell (not Linux)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kb is None else kb / 1024


def _peak_memory(local: bool) -> dict[str, float | None]:
    """getrusage's ru_maxrss (kB on Linux) in MB: this process, and the server it started and has stopped (the
    largest child waited for), if it started one."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"client_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "server_maxrss_mb": children if local else None}


def _progress_bar() -> Callable[[int, int, str], None]:
    bar: tqdm | None = None

    def update(done: int, total: int, case_id: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="case", file=sys.stderr)
        bar.update(done - bar.n)
        bar.set_postfix_str(f"case {case_id}")
        if done == total:
            bar.close()
            bar = None

    return update


def _write_json(
    path: Path, summaries: list[dict], all_results: list[tuple[int | None, list[CaseResult]]],
    peak_memory: dict[str, float | None] | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document: dict[str, object] = {
        "summaries": summaries,
        "cases": {str(t): [asdict(r) for r in results] for t, results in all_results},
    }
    if peak_memory is not None:
        document["peak_memory"] = peak_memory
    path.write_text(json.dumps(document, indent=1))
