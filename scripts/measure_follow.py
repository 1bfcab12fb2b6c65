"""How long until an edit added through one server answers on another over the same PostgreSQL store.

Starts two editcache servers with `--store` (and a throwaway PostgreSQL from Debian's package unless --store is
given), adds --edits edits one at a time through server A, and after each acknowledgement asks server B to Generate
the edit's prompt until B's answer names that edit. Prints the latency distribution, and that of A's AddEdits
itself (the store's write as a caller sees it), and writes them as JSON.

    .venv/bin/python scripts/measure_follow.py --edits 200 --out docs/figures/follow.json

The default model is the tests' tiny random-weight model (built in a temporary directory): the figure is the
store's and the follower's, not the model's; B's one-token Generate is the probe, so its latency is included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.postgres and tests.tiny

from client import GenerationOptions  # noqa: E402
from client.launch import LocalServer  # noqa: E402

PROBE = GenerationOptions(max_new_tokens=1)
GIVE_UP_S = 30.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]  # nearest rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--model", help="model for both servers (default: the tests' tiny model)")
    parser.add_argument("--store", help="postgresql:// URL of an empty database (default: a throwaway server)")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="measure-follow-") as scratch:
        root = Path(scratch)
        postgres = None
        if args.store is None:
            from tests.postgres import LocalPostgres

            postgres = LocalPostgres()
            postgres.start()
        try:
            store = args.store or postgres.new_database()  # type: ignore[union-attr]
            if args.model is None:  # as the tests run it: a 3-record IKE pool, not 10k train records to encode
                os.environ.setdefault("EDITCACHE_IKE_POOL", str(REPO / "tests" / "fixtures" / "eval" /
                                                                 "counterfact_flat.json"))
            model = args.model or str(tiny_model(root / "model"))
            a = LocalServer(model, root / "a", "--store", store)
            b = LocalServer(model, root / "b", "--store", store)
            a.start()
            b.start()
            try:
                latencies, adds = measure(a, b, args.edits)
            finally:
                a.stop()
                b.stop()
        finally:
            if postgres is not None:
                postgres.destroy()

    figures = {
        "edits": args.edits, "model": args.model or "tests/tiny.py", "seen": len(latencies),
        "p50_s": percentile(latencies, 0.50), "p90_s": percentile(latencies, 0.90),
        "p99_s": percentile(latencies, 0.99), "max_s": max(latencies), "mean_s": statistics.fmean(latencies),
        "add_edits_p50_s": percentile(adds, 0.50), "add_edits_p99_s": percentile(adds, 0.99),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(figures, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps({**figures, "latencies_s": latencies}, indent=2) + "\n")


def measure(a: LocalServer, b: LocalServer, edits: int) -> tuple[list[float], list[float]]:
    """Seconds from A's acknowledgement of each edit until B's Generate routes its prompt to it, and seconds of
    each AddEdits call on A."""
    latencies, adds = [], []
    with a.client("follow") as writer, b.client("follow") as reader:
        for i in range(edits):
            prompt = f"person{i} was born in the city of"
            sent = time.perf_counter()
            edit = writer.add_edit(f"person{i}", prompt, f"city{i}")
            acked = time.perf_counter()
            adds.append(acked - sent)
            while reader.generate(prompt, options=PROBE).edit_id != edit.id:
                if time.perf_counter() - acked > GIVE_UP_S:
                    raise SystemExit(f"edit {i} ({edit.id}) not answered on B after {GIVE_UP_S} s")
            latencies.append(time.perf_counter() - acked)
            if (i + 1) % 50 == 0:
                print(f"{i + 1}/{edits} edits, p50 so far {percentile(latencies, 0.5) * 1e3:.1f} ms", flush=True)
    return latencies, adds


def tiny_model(path: Path) -> Path:
    from tests.tiny import build_tiny_model, build_tiny_tokenizer

    build_tiny_model().save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return path


if __name__ == "__main__":
    main()
