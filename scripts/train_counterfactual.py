#!/usr/bin/env python
"""Trains the counterfactual model (a LoRA adapter on the served base model) on the TRAIN files.

Writes the adapter (peft, safetensors), counterfactual.json (the base model's fingerprint, the prompt format)
and metrics.json (training loss; greedy exact match before and after on held-out train cases; fixture
scores) to --out, by default artifacts/counterfactual/<model>/, where the server looks for it.

    scripts/train_counterfactual.py --torch-threads 2     # the defaults: 250 steps of 8, 2,000 examples

Time with Gemma-3-270M on 2 CPU cores shared with another job, one torch thread: about 5.5 s per training step
at batch 8 (rows of about 40 tokens), so the defaults take about 23 minutes of training plus about 3 for the
two held-out evaluations (50 cases); on idle cores about 3 s a step, 15 minutes in all.
Steps scale the time linearly; give --max-examples about steps x batch size, so no example is seen twice.
The server's routing threshold (--counterfactual-min-confidence) is chosen on val, not here.

    scripts/train_counterfactual.py --restamp artifacts/counterfactual/gemma-3-270m

records the served weights' current fingerprint in an adapter whose manifest names them by the old scheme
(config.json bytes), without training.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from counterfactual.examples import load_train_cases  # noqa: E402
from counterfactual.train import TrainSettings, train_counterfactual  # noqa: E402
from editdata.paths import DATA_DIR  # noqa: E402
from editdata.readers import load_cases  # noqa: E402
from server.config import default_cache_dir  # noqa: E402
from server.generators.counterfactual_adapter import default_adapter_dir, restamp_manifest  # noqa: E402
from server.models.load import load_model  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "eval" / "counterfact_flat.json"


def main(argv: list[str] | None = None) -> int:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", help="as for editcache-server --model")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="the shared data (train files only are read)")
    parser.add_argument("--out", type=Path, help="default: artifacts/counterfactual/<model>/")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--rank", type=int, default=defaults.rank, help="LoRA rank (alpha is twice it)")
    parser.add_argument("--max-examples", type=int, default=defaults.max_examples,
                        help="examples drawn from the training cases, retain examples included")
    parser.add_argument("--retain-examples", type=int, default=defaults.retain_examples,
                        help="of those, queries the edit does not bear on, answered with the abstention word (0: none)")
    parser.add_argument("--init-adapter", type=Path,
                        help="continue training this adapter (trained on the same model) instead of a fresh one")
    parser.add_argument("--unfamiliar-share", type=float, default=defaults.unfamiliar_share,
                        help="share of the examples about a made-up subject instead of the edit's own")
    parser.add_argument("--rule-share", type=float, default=defaults.rule_share,
                        help="share of the examples whose edit is shown as a patch's rule (counterfactual/rules.py)")
    parser.add_argument("--held-out-cases", type=int, default=defaults.held_out_cases,
                        help="train cases set aside to measure exact match (never trained on)")
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens, help="longest example kept")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--torch-threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    parser.add_argument("--fixture", type=Path, default=FIXTURE, help="small CounterFact file scored into metrics")
    parser.add_argument("--restamp", type=Path, metavar="ADAPTER_DIR",
                        help="do not train: record the model's current fingerprint in this adapter's manifest")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, rank=args.rank,
                             max_examples=args.max_examples, retain_examples=args.retain_examples,
                             rule_share=args.rule_share, unfamiliar_share=args.unfamiliar_share,
                             init_adapter=str(args.init_adapter or ""),
                             held_out_cases=args.held_out_cases,
                             max_tokens=args.max_tokens, seed=args.seed)
    started = time.perf_counter()
    loaded = load_model(args.model, args.cache_dir, args.torch_threads)
    if args.restamp is not None:
        manifest = restamp_manifest(args.restamp, loaded.fingerprint.current, loaded.fingerprint.legacy)
        print(json.dumps({"restamped": str(args.restamp), "model_fingerprint": manifest.model_fingerprint}))
        return 0
    out = args.out or default_adapter_dir(loaded.name)
    cases = load_train_cases(args.data_dir)
    fixture = load_cases(args.fixture)[1] if args.fixture else []
    metrics = train_counterfactual(loaded.model, loaded.tokenizer, loaded.name, loaded.fingerprint.current, cases, out,
                                   settings, fixture, progress=_progress())
    summary = {k: metrics[k] for k in ("loss_first", "loss_last", "seconds_per_step")}
    for when in ("before", "after"):
        summary[when] = {k: v for k, v in metrics[f"held_out_{when}"].items() if k.startswith("em_")}
    summary["total_s"] = round(time.perf_counter() - started, 1)
    summary["out"] = str(out)
    print(json.dumps(summary))
    return 0


def _progress():  # type: ignore[no-untyped-def]
    bars: dict[str, tqdm] = {}

    def update(done: int, total: int, stage: str) -> None:
        key = stage.split(" (")[0]  # "train (loss 1.234)" keeps one bar
        bar = bars.get(key)
        if bar is None or bar.total != total or done < bar.n:
            bar = bars[key] = tqdm(total=total, desc=key, file=sys.stderr)
        bar.set_postfix_str(stage[len(key):].strip(" ()"), refresh=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


if __name__ == "__main__":
    sys.exit(main())
