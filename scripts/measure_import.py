"""Bulk import and export, timed as a user runs them: `editctl import` of a benchmark file into one namespace,
`editctl export-edits`, and `editctl import --skip-supersede` of the export into another namespace, then both
namespaces compared field by field (all but id, namespace, times and supersede links, which an import makes anew).

    python scripts/measure_import.py --json docs/figures/import-counterfact-train.json

Starts its own server on `--model` unless `--addr` is given. Each step is the real `editctl` command in a
subprocess, so the times include the client's reading, batching and progress bar.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from client import EditcacheClient, EditRecord
from client.launch import LocalServer
from editdata.paths import COUNTERFACT_TRAIN

# What an import makes anew: not part of "the same edits".
FRESH_FIELDS = {"id", "namespace", "supersedes", "superseded_by"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=COUNTERFACT_TRAIN)
    parser.add_argument("--format", default="counterfact")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--addr", help="a running server (default: start one)")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the figures here")
    return parser.parse_args(argv)


def editctl(addr: str, *argv: str) -> tuple[float, dict[str, Any]]:
    """Runs `editctl --json ARGV`; (wall seconds, its JSON report)."""
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("editctl")), *argv, "--addr", addr, "--json"],
                          capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"editctl {' '.join(argv)} exited with {done.returncode}:\n{done.stderr[-4000:]}")
    return seconds, json.loads(done.stdout)


def comparable(edits: list[EditRecord]) -> list[str]:
    """The edits as sorted JSON of the fields an import carries over."""
    return sorted(json.dumps({k: v for k, v in dataclasses.asdict(e).items()
                              if k not in FRESH_FIELDS and not k.endswith("_unix_s")}, sort_keys=True, default=str)
                  for e in edits)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="editcache-import-")))
        addr = args.addr
        if addr is None:
            server = LocalServer(args.model, tmp / "data")
            server.start(timeout_s=900)
            stack.callback(server.stop)
            addr = server.addr
        load = os.getloadavg()[0]
        source_ns, copy_ns = f"import-{os.getpid()}", f"import-copy-{os.getpid()}"
        import_s, imported = editctl(addr, "import", str(args.file), "--format", args.format, "--namespace",
                                     source_ns, "--batch-size", str(args.batch_size))
        exported_path = tmp / "export.jsonl"
        export_s, exported = editctl(addr, "export-edits", "-o", str(exported_path), "--namespace", source_ns)
        reimport_s, reimported = editctl(addr, "import", str(exported_path), "--format", "jsonl", "--namespace",
                                         copy_ns, "--batch-size", str(args.batch_size), "--skip-supersede")
        with EditcacheClient(addr, timeout_s=600) as client:
            original = comparable(list(client.iter_edits(namespace=source_ns)))
            copy = comparable(list(client.iter_edits(namespace=copy_ns)))
    figures = {
        "file": str(args.file), "model": args.model, "batch_size": args.batch_size, "cpus": os.cpu_count(),
        "load_average_at_start": round(load, 2), "load_average_at_end": round(os.getloadavg()[0], 2),
        "import_s": round(import_s, 1), "added": imported["added"], "refused": len(imported["refused"]),
        "superseding": imported["superseding"], "live": len(original),
        "export_s": round(export_s, 1), "exported": exported["exported"],
        "reimport_s": round(reimport_s, 1), "reimported": reimported["added"],
        "round_trip_exact": original == copy,
        "round_trip_differences": len(set(original) ^ set(copy)),
    }
    print(json.dumps(figures, indent=2))
    if args.json_path:
        args.json_path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if figures["round_trip_exact"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
