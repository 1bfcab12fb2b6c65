#!/usr/bin/env python
"""Serving precision and batching (issue 25, items 2 and 3): how far bf16 and int8 answers, and answers decoded in a
running batch, stray from fp32's one-at-a-time answers, and how fast each decodes.

The model is loaded as the server loads it (server.models.load: `load_model` at the precision, then
`quantise_for_serving`) and answers through the server's own decoding path (CausalLM.decode, greedy). For each
precision, on the edit prompts of the first N records of counterfact/val.json (the unedited model's view of them):

- agreement: the share of prompts whose greedy tokens are exactly fp32's, and of tokens before the first
  difference;
- first divergence: where answers that differ first differ (token index, 0-based), and how many differ at once;
- batching (--batch-sizes): the same prompts answered by the server's batching model thread
  (server/generators/batching.py) with that many requests in flight at once, so rows of different prompts join and
  leave the batch as they would under load; agreement with fp32 one at a time, and the pass's tokens per second;
- speed: one stream, --speed-tokens new tokens on --speed-prompts prompts after a warm-up, at each of
  --speed-threads torch thread counts; tokens per second over all of them. Also the agreement pass's own
  seconds (at --threads).

On shared cores, two threads wait on each other at every matmul whenever another process holds a core (bf16 the
worst: 1 tok/s at a load average of 4, against 15 on one thread); measure speed on idle cores, or read the
one-thread figures.

Prints one JSON object (also written to --json). fp32 runs first: loading bf16 turns oneDNN off for the process,
so the flag is put back after each precision.

    nice -n 10 .venv/bin/python scripts/measure_precision.py --prompts 50 --json /tmp/precision-50.json
    nice -n 10 .venv/bin/python scripts/measure_precision.py --threads 1 --speed-threads 1,2 --json /tmp/p.json
    .venv/bin/python scripts/measure_precision.py --precisions bf16 --batch-sizes 4,16 --json /tmp/batching.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from editdata.paths import DATA_DIR
from editdata.readers import load_cases
from server.config import PRECISIONS, Config
from server.generators.batching import ModelThread
from server.generators.decoding import CausalLM
from server.models.load import LoadedModel, load_model, quantise_for_serving
from server.types import GenerationOptions

DEFAULT_DATA = DATA_DIR / "counterfact" / "val.json"
# Decoding-speed prompts: short, open-ended, so 64 tokens come before any end of text.
SPEED_PROMPTS = (
    "The history of the city begins",
    "In the morning the scientists",
    "The river flows through",
    "Her first novel was",
    "The company was founded in",
    "During the war, the army",
)


@dataclass(frozen=True)
class Agreement:
    prompts: int
    identical: float  # share of prompts whose greedy tokens equal fp32's
    first_token: float  # share of prompts whose first greedy token equals fp32's
    tokens_before_divergence: float  # share of fp32's tokens matched before the first difference
    diverged: int  # prompts whose tokens differ
    first_divergence_mean: float | None  # token index of the first difference, over diverged prompts
    first_divergence_median: float | None
    first_divergence_histogram: dict[str, int]  # index → prompts first differing there ("8+" gathers the rest)


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first index where the token lists differ (the shorter one's length when one extends the other)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def agreement(reference: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> Agreement:
    """How `other`'s greedy answers agree with `reference`'s, prompt by prompt."""
    firsts = [first_difference(r, o) for r, o in zip(reference, other, strict=True)]
    diverged = [f for f in firsts if f is not None]
    matched = sum(len(r) if f is None else min(f, len(r)) for r, f in zip(reference, firsts, strict=True))
    histogram: dict[str, int] = {}
    for f in sorted(diverged):
        key = str(f) if f < 8 else "8+"
        histogram[key] = histogram.get(key, 0) + 1
    n = len(reference)
    return Agreement(
        prompts=n,
        identical=(n - len(diverged)) / n,
        first_token=sum(f is None or f > 0 for f in firsts) / n,
        tokens_before_divergence=matched / max(1, sum(len(r) for r in reference)),
        diverged=len(diverged),
        first_divergence_mean=statistics.fmean(diverged) if diverged else None,
        first_divergence_median=statistics.median(diverged) if diverged else None,
        first_divergence_histogram=histogram,
    )


def greedy_answers(lm: CausalLM, prompts: Sequence[str], max_new_tokens: int, label: str) -> list[tuple[int, ...]]:
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    return [lm.decode(p, options).token_ids for p in tqdm(prompts, desc=f"{label} answers", unit="prompt")]


def batched_answers(loaded: LoadedModel, prompts: Sequence[str], max_new_tokens: int, batch: int,
                    label: str) -> list[tuple[int, ...]]:
    """Greedy answers with `batch` requests in flight at once on a batching model thread, in the prompts' order."""
    thread = ModelThread(batch)
    lm = CausalLM(loaded.model, loaded.tokenizer, batching=thread)
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    try:
        with ThreadPoolExecutor(batch) as pool:
            answers = pool.map(lambda p: lm.decode(p, options).token_ids, prompts)
            return list(tqdm(answers, total=len(prompts), desc=f"{label} batch {batch}", unit="prompt"))
    finally:
        thread.shutdown()


def decode_speed(lm: CausalLM, prompts: Sequence[str], new_tokens: int, label: str) -> dict[str, float]:
    """Tokens per second of one stream over `prompts`, after a short warm-up."""
    lm.decode(prompts[0], GenerationOptions(max_new_tokens=4))
    tokens, seconds = 0, 0.0
    for prompt in tqdm(prompts, desc=f"{label} speed", unit="prompt"):
        started = time.perf_counter()
        tokens += len(lm.decode(prompt, GenerationOptions(max_new_tokens=new_tokens)).token_ids)
        seconds += time.perf_counter() - started
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 2)}


def measure(precision: str, config: Config, prompts: Sequence[str], args: argparse.Namespace,
            reference: Sequence[Sequence[int]] | None) -> tuple[dict[str, Any], list[tuple[int, ...]]]:
    onednn = torch.backends.mkldnn.enabled
    load_before = os.getloadavg()[0]
    loaded = load_model(config.model, config.cache_dir, args.threads, precision)
    quantise_for_serving(loaded.model, precision)
    lm = CausalLM(loaded.model, loaded.tokenizer)
    stored = args.reference if precision == "fp32" else None
    if stored is not None and stored.exists():  # fp32's one-at-a-time answers from an earlier run on these prompts
        kept = json.loads(stored.read_text())
        if kept["prompts"] != list(prompts) or kept["max_new_tokens"] != args.max_new_tokens:
            raise SystemExit(f"{stored} holds answers to other prompts or lengths; remove it or pick another file")
        answers, answer_s = [tuple(a) for a in kept["answers"]], kept["seconds"]
    else:
        started = time.perf_counter()
        answers = greedy_answers(lm, prompts, args.max_new_tokens, precision)
        answer_s = time.perf_counter() - started
        if stored is not None:
            stored.write_text(json.dumps({"prompts": list(prompts), "max_new_tokens": args.max_new_tokens,
                                          "seconds": answer_s, "answers": answers}))
    speed_prompts = [SPEED_PROMPTS[i % len(SPEED_PROMPTS)] for i in range(args.speed_prompts)]
    speed = {}
    for threads in args.speed_threads:
        torch.set_num_threads(threads)
        speed[str(threads)] = decode_speed(lm, speed_prompts, args.speed_tokens, f"{precision} x{threads}")
    torch.set_num_threads(args.threads)
    batched: dict[str, Any] = {}
    for batch in args.batch_sizes:
        started = time.perf_counter()
        rows = batched_answers(loaded, prompts, args.max_new_tokens, batch, precision)
        seconds = time.perf_counter() - started
        batched[str(batch)] = {"answers_s": round(seconds, 1),
                               "answer_tokens_per_s": round(sum(len(a) for a in rows) / seconds, 2),
                               "agreement": asdict(agreement(reference or answers, rows))}
    result: dict[str, Any] = {
        "precision": precision,
        "answers_s": round(answer_s, 1),
        "answer_tokens_per_s": round(sum(len(a) for a in answers) / answer_s, 2),
        "speed_by_threads": speed,
        "batched": batched,  # agreement with fp32 answered one at a time
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before loading, after measuring
    }
    if reference is not None:
        result["agreement"] = asdict(agreement(reference, answers))
    del lm, loaded
    gc.collect()
    torch.backends.mkldnn.enabled = onednn  # type: ignore[assignment]  # a settable module property
    return result, answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CounterFact-format file (default: val)")
    parser.add_argument("--prompts", type=int, default=500, help="first N records' edit prompts (default 500)")
    parser.add_argument("--precisions", default="bf16,int8",
                        help="compared with fp32, which always runs first (default bf16,int8)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="greedy tokens per answer (default 16)")
    parser.add_argument("--speed-prompts", type=int, default=4)
    parser.add_argument("--speed-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the agreement pass (default 2)")
    parser.add_argument("--speed-threads", type=lambda text: [int(t) for t in text.split(",")], default=[2],
                        help="comma-separated torch thread counts to time decoding at (default 2)")
    parser.add_argument("--batch-sizes", type=lambda text: [int(b) for b in text.split(",") if b], default=[],
                        help="comma-separated requests in flight on a batching model thread, each compared with fp32 "
                        "one at a time (default none)")
    parser.add_argument("--reference", type=Path,
                        help="fp32's one-at-a-time answers: read from this file if it exists, else written to it")
    parser.add_argument("--model", default=Config().model)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    others = [p for p in args.precisions.split(",") if p and p != "fp32"]
    if unknown := [p for p in others if p not in PRECISIONS]:
        parser.error(f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(PRECISIONS)}")
    config = Config(model=args.model)
    _, cases = load_cases(args.data)
    prompts = [case.edits[0].prompt for case in cases[: args.prompts]]

    results = []
    fp32, reference = measure("fp32", config, prompts, args, None)
    results.append(fp32)
    for precision in others:
        result, _ = measure(precision, config, prompts, args, reference)
        baseline = fp32["speed_by_threads"]
        result["speed_vs_fp32"] = {threads: round(speed["tokens_per_s"] / baseline[threads]["tokens_per_s"], 2)
                                   for threads, speed in result["speed_by_threads"].items()}
        results.append(result)
    report = {
        "data": str(args.data), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "threads": args.threads, "speed_tokens": args.speed_tokens, "model": args.model, "torch": torch.__version__,
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
