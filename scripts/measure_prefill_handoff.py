"""The counterfactual route's prompt handed from the judgement to the answer (issue 25, item 4), measured A/B.

For each of the first N CounterFact train records: the judgement of (edit, paraphrase), then the answer, once
reading the cache the judgement left and once with that cache dropped (the whole prompt read again), in
alternating order so that a change of load hits both alike. Prints the medians of judgement + answer and how many
greedy answers are token-for-token equal.

    .venv/bin/python scripts/measure_prefill_handoff.py --cases 24
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from editdata.paths import COUNTERFACT_TRAIN
from server.app import build_counterfactual
from server.config import Config
from server.models.load import load_model
from server.types import Edit, GenerationOptions


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    config = Config()
    generator, why = build_counterfactual(config, load_model(config.model, config.cache_dir))
    if generator is None:
        raise SystemExit(f"no counterfactual model: {why}")
    options = GenerationOptions(max_new_tokens=args.max_new_tokens)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    equal = 0
    for i, case in enumerate(json.loads(COUNTERFACT_TRAIN.read_text())[: args.cases]):
        edit = Edit(id=f"case-{i}", namespace="bench", subject=case["subject"], prompt=case["prompt"],
                    target_new=case["target_new"], target_true=None, paraphrases=(), created_at_unix_s=0.0)
        query = case["rephrase_prompt"]
        tokens: dict[bool, tuple[int, ...]] = {}
        for handed in (True, False) if i % 2 else (False, True):
            started = time.perf_counter()
            generator.judge(edit, query)
            if not handed:
                generator.prefill(edit, query)  # dropped: the answer reads its whole prompt
            tokens[handed] = generator.generate(query, edit, options).token_ids
            seconds[handed].append(time.perf_counter() - started)
        equal += tokens[True] == tokens[False]
    print(json.dumps({"cases": args.cases, "load_average": round(os.getloadavg()[0], 2),
                      "judgement_and_answer_p50_s": {"handed": round(statistics.median(seconds[True]), 3),
                                                     "read_again": round(statistics.median(seconds[False]), 3)},
                      "greedy_equal": equal}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
