#!/usr/bin/env python
"""How far other prompts' keys lie from an edit's key at GRACE's layer, as shares of the key's norm: the
paraphrase, the neighbourhood prompt (another subject, the same relation) and the other cases' prompts.
Used to choose GRACE's default deferral radius (docs/BENCHMARKS.md); never run it on validation or dev files.

    scripts/grace_key_distances.py --layers 8 12 15 --cases 50
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import PreTrainedModel, PreTrainedTokenizerBase  # noqa: E402

from editdata.paths import COUNTERFACT_TRAIN  # noqa: E402
from server.config import default_cache_dir  # noqa: E402
from server.models.load import load_model  # noqa: E402
from server.parametric.grace import at_last_prompt_token  # noqa: E402
from server.parametric.prompts import build_batch  # noqa: E402
from server.parametric.targets import module_io  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--data", type=Path, default=COUNTERFACT_TRAIN)
    parser.add_argument("--layers", type=int, nargs="+", required=True)
    parser.add_argument("--cases", type=int, default=50)
    args = parser.parse_args()
    if "val" in args.data.name or "dev" in args.data.name:
        parser.error("choose settings on a train file, not on validation or dev data")
    loaded = load_model(args.model, default_cache_dir())
    cases = json.loads(args.data.read_text())[: args.cases]
    for layer in args.layers:
        module = loaded.model.get_submodule(loaded.arch.mlp_out.format(layer))
        key = functools.partial(grace_key, loaded.model, loaded.tokenizer, module)
        keys = [key(c["prompt"]) for c in cases]
        paraphrase = [share(k, key(c["rephrase_prompt"])) for k, c in zip(keys, cases, strict=True)]
        neighbour = [share(k, key(c["locality_prompt"])) for k, c in zip(keys, cases, strict=True)]
        others = [share(a, b) for i, a in enumerate(keys) for j, b in enumerate(keys) if i != j]
        print(json.dumps({"layer": layer, "cases": len(cases),
                          "paraphrase_p10_p50_p90": quantiles(paraphrase, (0.1, 0.5, 0.9)),
                          "neighbourhood_min_p10_p50": quantiles(neighbour, (0.0, 0.1, 0.5)),
                          "other_prompts_min_p1_p10_p50": quantiles(others, (0.0, 0.01, 0.1, 0.5))}), flush=True)


def grace_key(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, module: nn.Module, text: str) -> torch.Tensor:
    """The module's input at the text's last token, (d_in,) float32."""
    # GRACE's key needs no subject; build_batch wants one, so the text's first character stands in.
    batch = at_last_prompt_token(build_batch(tokenizer, [text], text[:1]))
    return module_io(model, module, batch)[0][0].float()


def share(key: torch.Tensor, query: torch.Tensor) -> float:
    """‖query − key‖ / ‖key‖."""
    return float((query - key).norm() / key.norm())


def quantiles(values: list[float], at: tuple[float, ...]) -> list[float]:
    ordered = sorted(values)
    return [round(ordered[int(q * (len(ordered) - 1))], 3) for q in at]


if __name__ == "__main__":
    main()
