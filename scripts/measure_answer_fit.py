#!/usr/bin/env python
"""Does a patch's answer fit the question asked? A measurement for issue 26's uncovered patch questions.

A rule answers one kind of question ("Say that the Rivenna ferry leaves from Pier 7"): a question of another kind
about the same subject ("The Rivenna ferry crosses the") should get no "Pier 7". The signal measured here is how
much the question predicts the rule's answer, against how much the rule's own wording before the answer does,
both over the answer's prior (log-probabilities under the counterfactual model copy, reading plain text):

    fit = (log p(a | question) - log p(a)) / (log p(a | rule before a) - log p(a))

1 means the question predicts the answer as well as the rule does; 0 not at all. Printed: the fit of each covered
and uncovered fixture question (tests/fixtures/nl_patches.json, the rule's answer as `a`), and, as the only fair
place to choose a threshold, the fit on `counterfact/train.json` records written as rules (counterfactual/rules.py):
the record's rephrased prompt (should fit) against another record's prompt about the same subject (should not).

    .venv/bin/python scripts/measure_answer_fit.py --train-records 150 --json fit.json

About 6 minutes on one busy core (Gemma-3-270M).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from counterfactual.rules import rule_wordings  # noqa: E402
from editdata.paths import COUNTERFACT_TRAIN  # noqa: E402
from server.config import Config  # noqa: E402
from server.generators.counterfactual_adapter import default_adapter_dir, load_adapted_model  # noqa: E402
from server.models.load import load_model  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "nl_patches.json"


def fit(question: float, rule: float, prior: float) -> float | None:
    """The share of the rule's evidence for the answer that the question gives; None when the rule gives none."""
    return (question - prior) / (rule - prior) if rule > prior else None


def before_answer(rule: str, answer: str) -> str | None:
    """The rule's words before its answer, the cloze the answer completes; None if the answer is not in it."""
    at = rule.find(answer)
    return rule[:at].rstrip() if at > 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-records", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = Config()
    loaded = load_model(config.model, config.cache_dir, 1)
    model, _ = load_adapted_model(loaded.model, default_adapter_dir(loaded.name), loaded.fingerprint.current,
                                  loaded.fingerprint.legacy)
    tokenizer = loaded.tokenizer

    @torch.inference_mode()
    def logprob(context: str | None, answer: str) -> float:
        """log p(answer | context) under the copy; context None: the answer after BOS alone (its prior)."""
        prefix = tokenizer(context)["input_ids"] if context is not None else [tokenizer.bos_token_id]
        ids = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([prefix + ids])).logits[0, len(prefix) - 1 : -1]  # (len(ids), vocab)
        return float(logits.float().log_softmax(-1)[torch.arange(len(ids)), torch.tensor(ids)].sum())

    def fits(rule: str, answer: str, questions: list[str]) -> list[float | None]:
        cloze = before_answer(rule, answer)
        if cloze is None:
            return [None for _ in questions]
        prior, by_rule = logprob(None, answer), logprob(cloze, answer)
        return [fit(logprob(q, answer), by_rule, prior) for q in questions]

    report: dict[str, list[dict[str, object]]] = {"fixture": [], "train": []}
    for record in json.loads(FIXTURE.read_text()):
        answer = record["covered"][0]["answer"]
        covered = [q["prompt"] for q in record["covered"]]
        *covered_fit, uncovered_fit = fits(record["rule"], answer, [*covered, record["uncovered"]["prompt"]])
        report["fixture"].append({"rule": record["rule"], "covered": covered_fit, "uncovered": uncovered_fit})
    rng = random.Random(args.seed)
    records = rng.sample(json.loads(COUNTERFACT_TRAIN.read_text()), 2 * args.train_records)
    for record, other in zip(records[: args.train_records], records[args.train_records :], strict=True):
        if other["subject"] not in other["prompt"]:
            continue
        rule = rng.choice(rule_wordings(record["prompt"], record["target_new"]))
        other_question = other["prompt"].replace(other["subject"], record["subject"])
        same, different = fits(rule, record["target_new"], [record["rephrase_prompt"], other_question])
        report["train"].append({"rule": rule, "rephrase": same, "other_relation": different})
    print(json.dumps(summary(report), indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def summary(report: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    """Per threshold: train rephrasings kept and other relations stopped; fixture covered kept, uncovered stopped."""
    def share(values: list[float | None], keep: bool, threshold: float) -> str:
        known = [v for v in values if v is not None]
        hits = sum((v >= threshold) == keep for v in known)
        return f"{hits}/{len(known)}"

    train_same = [row["rephrase"] for row in report["train"]]
    train_other = [row["other_relation"] for row in report["train"]]
    covered = [f for row in report["fixture"] for f in row["covered"]]  # type: ignore[attr-defined]
    uncovered = [row["uncovered"] for row in report["fixture"]]
    return {
        f"{t}": {"train rephrase kept": share(train_same, True, t),  # type: ignore[arg-type]
                 "train other relation stopped": share(train_other, False, t),  # type: ignore[arg-type]
                 "fixture covered kept": share(covered, True, t),
                 "fixture uncovered stopped": share(uncovered, False, t)}  # type: ignore[arg-type]
        for t in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
    }


if __name__ == "__main__":
    raise SystemExit(main())
