#!/usr/bin/env python
"""One client's requests, back to back, answered by llama.cpp (llama-cpp-python) on a GGUF file: the tool a CPU
user would otherwise pick, timed the way `scripts/bench.py --only d` times editcache's one-client run.

llama-cpp-python is no dependency of editcache: run this with an interpreter that has it (it builds from source
with cmake: `CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python` in a venv of its own, about 25 minutes on
2 busy cores). bench.py calls it with `--llama-cpp-python PYTHON`; alone:

    /path/to/venv/bin/python scripts/llama_cpp_stream.py --gguf model.gguf --prompt "The capital of Norway is"

Prints one JSON object: requests/s, tokens/s and each request's milliseconds.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--prompt", action="append", required=True, help="asked in turn; repeat for several")
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from llama_cpp import Llama

    llm = Llama(model_path=args.gguf, n_ctx=256, n_threads=args.threads, n_batch=64, verbose=False)

    def answer(prompt: str) -> int:
        """Greedy, exactly `--new-tokens` tokens (no stop), as the editcache baseline: the tokens written."""
        out = llm.create_completion(prompt, max_tokens=args.new_tokens, temperature=0.0, top_k=1, stop=[],
                                    logit_bias={llm.token_eos(): -1e9})  # never stop early: same work per request
        return int(out["usage"]["completion_tokens"])

    answer(args.prompt[0])  # warm-up, not timed
    samples = []
    started = time.perf_counter()
    for i in range(args.requests):
        t0 = time.perf_counter()
        tokens = answer(args.prompt[i % len(args.prompt)])
        samples.append(((time.perf_counter() - t0) * 1e3, tokens))
    wall_s = time.perf_counter() - started
    print(json.dumps({"requests_per_s": round(len(samples) / wall_s, 2),
                      "tokens_per_s": round(sum(n for _, n in samples) / wall_s, 1),
                      "latency_ms": [round(ms, 1) for ms, _ in samples], "threads": args.threads}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
