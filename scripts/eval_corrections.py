#!/usr/bin/env python
"""Measure how well the server reads free-text corrections (Correct, dry run): see docs/BENCHMARKS.md.

    .venv/bin/python scripts/eval_corrections.py                       # starts a Gemma-3-270M server
    .venv/bin/python scripts/eval_corrections.py --addr 127.0.0.1:50051

Prints one line per correction, then a JSON summary as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from client import EditcacheClient
from client.evaluation.corrections import (
    CorrectionOutcome,
    evaluate_corrections,
    load_correction_cases,
    summarize_corrections,
)
from client.launch import LocalServer

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "corrections.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eval_corrections.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FIXTURE, help="labelled corrections (default %(default)s)")
    parser.add_argument("--addr", help="a running server (default: start one on --model)")
    parser.add_argument("--model", default="gemma-3-270m", help="model for the server this command starts")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra flag for the server this command starts (repeatable)")
    parser.add_argument("--token", help="bearer token (write role) for --addr")
    args = parser.parse_args(argv)
    cases = load_correction_cases(args.data)

    with ExitStack() as stack:
        addr = args.addr
        if addr is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="editcache-corrections-")))
            # No IKE pool: extraction runs on the base model only.
            server = LocalServer(args.model, data_dir, "--ike-k", "0", *args.server_arg)
            print(f"starting a server on {args.model} (log: {server.log_path})", file=sys.stderr)
            server.start(timeout_s=900)
            stack.callback(server.stop)
            addr = server.addr
        client = stack.enter_context(EditcacheClient(addr, token=args.token, timeout_s=300))
        model = client.server_info().model
        outcomes = evaluate_corrections(client, cases, _print_outcome)

    summary = summarize_corrections(outcomes) | {"model": model, "data": str(args.data)}
    print(json.dumps(summary))
    return 0


def _print_outcome(o: CorrectionOutcome) -> None:
    read = f"{o.subject!r} -> {o.target!r}" if o.error is None else f"refused: {o.error}"
    expected = "refuse" if o.case.subject is None else f"{o.case.subject!r} -> {o.case.target!r}"
    print(f"{'ok  ' if o.ok else 'MISS'} {o.case.correction!r}: {read} (expected {expected}; {o.seconds:.1f} s)",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
