#!/usr/bin/env python
"""The counterfactual model alone on the patch fixture (issue 26): each rule of tests/fixtures/nl_patches.json and
each of its questions handed straight to the model, no gate. Counts the uncovered questions it abstains on and the
covered ones whose greedy answer starts with the rule's answer; prints one JSON line per rule, then the counts.

    .venv/bin/python scripts/measure_patch_judgement.py                              # the shipped adapter
    .venv/bin/python scripts/measure_patch_judgement.py --adapter /tmp/adapter-dir

About 3 minutes on 2 cores (Gemma-3-270M).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.app import build_counterfactual  # noqa: E402
from server.config import Config  # noqa: E402
from server.models.load import load_model  # noqa: E402
from server.types import Edit, EditKind, GenerationOptions  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "nl_patches.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, help="counterfactual adapter directory (default: the shipped one)")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    config = Config(counterfactual_adapter=args.adapter)
    loaded = load_model(config.model, config.cache_dir, args.torch_threads)
    generator, off = build_counterfactual(config, loaded)
    if generator is None:
        raise SystemExit(f"no counterfactual model: {off}")
    options = GenerationOptions(max_new_tokens=10)
    abstained, followed, covered = 0, 0, 0
    rules = json.loads(FIXTURE.read_text())
    for rule in rules:
        patch = Edit(id="patch", namespace="fixture", subject=rule["subject"], prompt=rule["rule"], target_new="",
                     target_true=None, paraphrases=tuple(rule["examples"]), created_at_unix_s=0.0,
                     kind=EditKind.PATCH)
        row: dict[str, object] = {"rule": rule["rule"], "covered": []}
        for question in rule["covered"]:
            # Judged first, as the router does, so the answer reuses the judgement's pass over the prompt.
            abstains = generator.judge(patch, question["prompt"]).abstains
            answer = generator.generate(question["prompt"], patch, options).text.strip()
            ok = not abstains and answer.startswith(question["answer"])
            followed += ok
            covered += 1
            row["covered"].append({"question": question["prompt"], "answer": answer, "followed": ok})  # type: ignore[attr-defined]
        question = rule["uncovered"]["prompt"]
        judgement = generator.judge(patch, question)
        abstained += judgement.abstains
        row["uncovered"] = {"question": question, "abstains": judgement.abstains,
                            "answer": generator.generate(question, patch, options).text.strip()}
        print(json.dumps(row), flush=True)
    print(json.dumps({"uncovered_abstained": abstained, "uncovered": len(rules), "covered_followed": followed,
                      "covered": covered}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
