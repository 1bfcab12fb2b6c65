#!/usr/bin/env python
"""Evaluate the edit kinds and supersession through a server (issue 26): `--task erase|insert|patch|supersede`.

See client/evaluation/lifecycle.py for what each task measures and docs/BENCHMARKS.md ("Edit kinds") for runs.
The last line of stdout is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from client import EditcacheClient
from client.evaluation.lifecycle import (
    TASKS,
    Prober,
    Task,
    markdown,
    run_erase,
    run_insert,
    run_patch,
    run_supersede,
    write_json,
)
from client.evaluation.runner import BaselineCache
from client.launch import LocalServer
from editdata.paths import DATA_DIR
from editdata.readers import load_cases

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
DEFAULT_DATA = {
    "erase": DATA_DIR / "counterfact" / "val.json",
    "supersede": DATA_DIR / "counterfact" / "val.json",
    "insert": FIXTURES / "insert_entities.json",
    "patch": FIXTURES / "nl_patches.json",
}
DEFAULT_REFUSAL = "I don't know."


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="eval_lifecycle.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--data", type=Path, help="cases (default: counterfact/val.json or the task's fixture)")
    parser.add_argument("--limit", type=int, help="the first N cases")
    parser.add_argument("--route", help="patch: answer the covered questions on this route from the patch "
                        "(counterfactual, ike, prompt) instead of through the gate")
    parser.add_argument("--no-examples", action="store_true",
                        help="patch: the rule alone as key text, without its example question")
    parser.add_argument("--refusal", default=DEFAULT_REFUSAL,
                        help="erase: the server's refusal (passed to the server this command starts)")
    parser.add_argument("--addr", help="a running server (default: start one on --model)")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for the server it starts")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the summary and every probe here")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "editcache" / "eval",
                        help="where the unedited model's outputs are cached")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    data = args.data or DEFAULT_DATA[args.task]
    with ExitStack() as stack:
        addr = args.addr
        if addr is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="editcache-lifecycle-")))
            server = LocalServer(args.model, data_dir, f"--refusal={args.refusal}", *args.server_arg)
            print(f"starting a server on {args.model} (log: {server.log_path})", file=sys.stderr)
            server.start(timeout_s=900)
            stack.callback(server.stop)
            addr = server.addr
        client = stack.enter_context(EditcacheClient(addr, timeout_s=600))
        baseline = BaselineCache.for_server(client.server_info(), args.cache_dir)
        prober = Prober(client, baseline)
        bar = tqdm(unit="case", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        started = time.perf_counter()
        task = run(args, data, prober, progress)
        bar.close()
        baseline.save()
    summary = task.summary() | {"seconds": round(time.perf_counter() - started), "data": str(data),
                                "model": args.model}
    print(markdown(summary))
    if args.json_path:
        write_json(args.json_path, summary, task, {k: str(v) for k, v in vars(args).items()})
    print(json.dumps(summary))
    return 0


def run(args: argparse.Namespace, data: Path, prober: Prober, progress: Callable[[int, int], None]) -> Task:
    if args.task in ("insert", "patch"):
        records = json.loads(data.read_text())[: args.limit]
        if args.task == "insert":
            return run_insert(prober, records, progress)
        return run_patch(prober, records, args.route, not args.no_examples, progress)
    _, cases = load_cases(data)
    cases = cases[: args.limit]
    if args.task == "erase":
        return run_erase(prober, cases, args.refusal, progress)
    return run_supersede(prober, cases, progress)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
