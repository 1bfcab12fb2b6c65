#!/usr/bin/env python
"""Load test: N concurrent clients mixing AddEdits and Generate for a bounded time; figures go to docs/BENCHMARKS.md.

Runs against a server this script starts (--model, loopback, with --max-queue) or one on a loopback --addr.
Each client is a thread with its own EditcacheClient and namespace. Reports requests, errors by status
code, p50/p99 latency per RPC, edits acknowledged against edits found afterwards (every namespace is
listed in full at the end: none may be lost), and the server's RSS before, after and sampled over time
(when this script started the server). RESOURCE_EXHAUSTED is the server shedding load on purpose and is
counted apart from unexpected errors. A server this script starts also serves HTTP: its Prometheus `/metrics`
is read before, halfway through (gauges such as the queue depth are back to 0 at the end) and after the load,
and every metric family is reported with how many of its samples moved.
A markdown table goes to stdout; the last line is a JSON summary.

    .venv/bin/python scripts/loadtest.py --clients 16 --duration-s 300 --max-queue 8
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client import EditcacheClient, EditcacheError, GenerationOptions
from client.launch import LocalServer
from editdata.metrics import percentile
from server.auth.exposure import is_loopback

PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "The mother tongue of Danielle Darrieux is",
    "The capital of Norway is",
    "the capital of france is",
]
CITIES = ["Taipei", "Lima", "Oslo", "Rome", "Cairo", "Quito"]
EXPECTED_CODES = {"RESOURCE_EXHAUSTED"}  # deliberate back-pressure, not a failure


@dataclass
class Tally:
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {"AddEdits": [], "Generate": []})
    codes: Counter[str] = field(default_factory=Counter)
    acked: dict[str, list[str]] = field(default_factory=dict)  # namespace -> acknowledged edit ids
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_client(addr: str, index: int, until: float, add_share: float, max_new_tokens: int, tally: Tally) -> None:
    namespace = f"load-{index:02d}"
    mine: list[str] = []  # acknowledged edit ids
    try:
        drive(addr, namespace, random.Random(index), until, add_share, max_new_tokens, tally, mine)
    except Exception as exc:  # a bug in this script: counted as an unexpected error, never silent
        with tally.lock:
            tally.codes[f"client CRASH:{type(exc).__name__}"] += 1
    finally:
        with tally.lock:
            tally.acked[namespace] = mine


def drive(addr: str, namespace: str, rng: random.Random, until: float, add_share: float, max_new_tokens: int,
          tally: Tally, mine: list[str]) -> None:
    index = int(namespace.rsplit("-", 1)[1])
    subjects: list[str] = []
    with EditcacheClient(addr, namespace=namespace, timeout_s=120) as client:
        n = 0
        while time.monotonic() < until:
            adding = rng.random() < add_share
            rpc = "AddEdits" if adding else "Generate"
            started = time.perf_counter()
            try:
                if adding:
                    subject = f"Landmark{index}x{n}"
                    record = client.add_edit(subject, f"{subject} is located in the city of", rng.choice(CITIES))
                    mine.append(record.id)
                    subjects.append(subject)
                else:  # a fixed prompt, or one of this client's edited prompts
                    prompts = PROMPTS + ([f"{rng.choice(subjects)} is located in the city of"] if subjects else [])
                    client.generate(rng.choice(prompts), options=GenerationOptions(max_new_tokens=max_new_tokens))
                code = "OK"
            except EditcacheError as exc:
                code = exc.code.name
            elapsed_ms = (time.perf_counter() - started) * 1e3
            with tally.lock:
                tally.codes[f"{rpc} {code}"] += 1
                if code == "OK":
                    tally.latencies_ms[rpc].append(elapsed_ms)
            n += 1


def sample_rss(pid: int, every_s: float, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    import psutil  # only the load test needs it

    process, started = psutil.Process(pid), time.monotonic()
    while True:
        samples.append((round(time.monotonic() - started, 1), round(process.memory_info().rss / 2**20, 1)))
        if stop.wait(every_s):
            samples.append((round(time.monotonic() - started, 1), round(process.memory_info().rss / 2**20, 1)))
            return


def read_metrics(http_url: str) -> dict[str, dict[str, float]]:
    """Every sample of the server's /metrics, by family: {family: {sample name and labels: value}}."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{http_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {family.name: {f"{s.name}{sorted(s.labels.items())}": s.value for s in family.samples}
            for family in text_string_to_metric_families(text)}


def metrics_moved(before: dict[str, dict[str, float]], *later: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per editcache/gRPC family (creation times left out): samples at the end, and how many were new or
    different from before the load in any later reading."""
    moved = {}
    for name, samples in sorted(later[-1].items()):
        if name.startswith(("editcache_", "grpc_server_")) and not name.endswith("_created"):
            old = before.get(name, {})
            changed = {k for reading in later for k, v in reading.get(name, {}).items() if old.get(k) != v}
            moved[name] = {"samples": len(samples), "moved": len(changed)}
    return moved


def stats_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 50), 1), "p99": round(percentile(values, 99), 1)}


def run(args: argparse.Namespace, addr: str, pid: int | None, http_url: str | None = None) -> dict[str, Any]:
    tally = Tally()
    metrics_before = read_metrics(http_url) if http_url else {}
    stop_sampling = threading.Event()
    rss: list[tuple[float, float]] = []
    sampler = None
    if pid is not None:
        sampler = threading.Thread(target=sample_rss, args=(pid, args.sample_s, stop_sampling, rss), daemon=True)
        sampler.start()
    until = time.monotonic() + args.duration_s
    threads = [threading.Thread(target=run_client, args=(addr, i, until, args.add_share, args.max_new_tokens, tally))
               for i in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    metrics_midway = {}
    if http_url:
        time.sleep(args.duration_s / 2)
        metrics_midway = read_metrics(http_url)
    for thread in threads:
        thread.join()
    wall_s = time.monotonic() - started
    stop_sampling.set()
    if sampler is not None:
        sampler.join()

    lost: list[str] = []
    found = 0
    with EditcacheClient(addr, timeout_s=120) as client:
        for namespace, ids in tally.acked.items():
            listed = {e.id for e in client.iter_edits(1000, namespace=namespace)}
            found += len(listed & set(ids))
            lost += sorted(set(ids) - listed)
    metrics = metrics_moved(metrics_before, metrics_midway, read_metrics(http_url)) if http_url else None
    errors = {k: v for k, v in tally.codes.items() if not k.endswith(" OK")}
    requests = sum(tally.codes.values())
    return {
        "clients": args.clients, "duration_s": round(wall_s, 1), "add_share": args.add_share,
        "max_new_tokens": args.max_new_tokens, "max_queue": args.max_queue, "model": args.model if pid else None,
        "requests": requests, "requests_per_s": round(requests / wall_s, 2), "codes": dict(sorted(tally.codes.items())),
        "errors": errors,
        "unexpected_errors": sum(v for k, v in errors.items() if k.split()[1] not in EXPECTED_CODES),
        "latency_ms": {rpc: stats_ms(v) for rpc, v in tally.latencies_ms.items()},
        "edits_acknowledged": sum(len(v) for v in tally.acked.values()), "edits_found": found, "edits_lost": lost,
        "rss_mb": {"before": rss[0][1], "after": rss[-1][1], "max": max(r for _, r in rss), "samples": rss}
        if rss else None,
        "metrics": metrics,
    }


def markdown(s: dict[str, Any]) -> str:
    lines = [
        f"{s['clients']} clients, {s['duration_s']} s, {s['requests']} requests ({s['requests_per_s']}/s), "
        f"AddEdits share {s['add_share']}, max_new_tokens {s['max_new_tokens']}, max_queue {s['max_queue']}",
        "",
        "| RPC | OK | p50 ms | p99 ms | errors by code |",
        "|---|---|---|---|---|",
    ]
    for rpc, lat in s["latency_ms"].items():
        errs = ", ".join(f"{k.split()[1]} {v}" for k, v in s["errors"].items() if k.startswith(rpc)) or "none"
        lines.append(f"| {rpc} | {lat['n']} | {lat.get('p50', '-')} | {lat.get('p99', '-')} | {errs} |")
    lines += ["", f"unexpected errors: {s['unexpected_errors']}; edits acknowledged {s['edits_acknowledged']}, "
                  f"found afterwards {s['edits_found']}, lost {len(s['edits_lost'])}"]
    if s["rss_mb"]:
        r = s["rss_mb"]
        lines.append(f"server RSS: {r['before']} MiB at start, {r['after']} MiB at end, {r['max']} MiB at most "
                     f"(sampled: {', '.join(f'{t:g}s {m:g}' for t, m in r['samples'])})")
    if s["metrics"]:
        lines += ["", "| /metrics family | samples | moved under load |", "|---|---|---|"]
        lines += [f"| {name} | {m['samples']} | {m['moved']} |" for name, m in s["metrics"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", help="model name or path for the server this starts")
    parser.add_argument("--addr", help="use this running server (loopback only) instead of starting one")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--add-share", type=float, default=0.3, help="share of requests that are AddEdits")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--max-queue", type=int, default=8, help="the started server's --max-queue")
    parser.add_argument("--sample-s", type=float, default=15.0, help="seconds between server RSS samples")
    parser.add_argument("--data-dir", type=Path, help="the started server's data dir (default: a temporary one)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra editcache-server argument")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the summary here too")
    args = parser.parse_args(argv)

    if args.addr is not None:
        if not is_loopback(args.addr):
            parser.error(f"--addr must be a loopback address (127.0.0.1 or localhost), got {args.addr}")
        summary = run(args, args.addr, None)
    else:
        with tempfile.TemporaryDirectory(prefix="editcache-load-") as tmp:
            server = LocalServer(args.model, args.data_dir or Path(tmp), "--max-queue", str(args.max_queue),
                                 *args.server_arg, http=True)
            print(f"starting the server on {args.model} (log: {server.log_path})", file=sys.stderr)
            server.start()
            try:
                summary = run(args, server.addr, server.pid, server.http_url)
            finally:
                server.stop()
    print(markdown(summary))
    if args.json_path:
        args.json_path.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
