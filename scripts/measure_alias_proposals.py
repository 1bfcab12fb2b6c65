#!/usr/bin/env python
"""Could the served model propose an edit subject's aliases at add time? (issue 24 item 1)

The issue asks for aliases "the server proposes at add time, for example the served model's own 'X is also known
as' completions, kept only if they pass a check you measure". This measures the proposals and two checks on the
train files only (KnowEdit `Subject_Aliasing`: the alias is the probe's prompt less the edit prompt's words around
the subject), before anything is built:

- the proposal: a greedy completion of a few-shot prompt ("Name: ...\\nAlso known as: ..."; four hand-written
  demonstrations, none from the data), its first line;
- check 1, the round trip: the model, asked the same about the proposal, gives the subject back;
- check 2, teacher-forced: the geometric-mean probability of the subject's tokens after the proposal's prompt.

A proposal counts as right when it equals a listed alias up to case and spacing (a lower bound: the lists are not
complete). One JSON line per case with --json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_alias_proposals.py --cases 200 --json out.jsonl

About 12 minutes on one core (Gemma-3-270M).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from editdata.paths import DATA_DIR  # noqa: E402
from server.config import default_cache_dir  # noqa: E402
from server.models.load import load_model  # noqa: E402
from server.types import subject_key  # noqa: E402

TRAIN_FILES = ("knowedit/wiki_counterfact_train.json", "knowedit/wiki_recent_train.json")
DEMONSTRATIONS = (
    ("International Business Machines Corporation", "IBM"),
    ("Federal Republic of Germany", "Germany"),
    ("Saint Petersburg", "Leningrad"),
    ("Johann Sebastian Bach", "J. S. Bach"),
)
TF_THRESHOLDS = (0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class Proposal:
    subject: str
    alias: str  # the one the data lists
    proposal: str
    new: bool  # not the subject again
    right: bool  # the listed alias
    round_trip: bool
    subject_probability: float


def alias_pairs(path: Path) -> list[tuple[str, str]]:
    """(subject, alias) from each record's first `Subject_Aliasing` probe that rewords only the subject."""
    pairs = []
    for record in json.loads(path.read_text()):
        prompt, subject = record["prompt"], record["subject"]
        at = prompt.find(subject)
        for probe in record.get("portability", {}).get("Subject_Aliasing", [])[:1]:
            before, after, text = prompt[:at], prompt[at + len(subject):], probe["prompt"]
            if at >= 0 and text.startswith(before) and text.endswith(after) and len(text) > len(before) + len(after):
                pairs.append((subject, text[len(before):len(text) - len(after)]))
    return pairs


def few_shot(name: str) -> str:
    shots = "".join(f"Name: {a}\nAlso known as: {b}\n\n" for a, b in DEMONSTRATIONS)
    return f"{shots}Name: {name}\nAlso known as:"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, dest="json_path")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = load_model("gemma-3-270m", default_cache_dir(), torch_threads=1)
    tokenizer, model = lm.tokenizer, lm.model

    def complete(prompt: str) -> str:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=16, do_sample=False)  # type: ignore[operator]  # typed loosely
        return str(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)).split("\n")[0].strip()

    def subject_probability(prompt: str, subject: str) -> float:
        context = tokenizer(prompt, return_tensors="pt").input_ids  # (1, n)
        target = tokenizer(" " + subject, add_special_tokens=False, return_tensors="pt").input_ids  # (1, m)
        with torch.inference_mode():
            logits = model(torch.cat([context, target], 1)).logits[0, context.shape[1] - 1:-1].float()  # (m, V)
        return float(torch.log_softmax(logits, -1).gather(1, target[0][:, None]).mean().exp())

    pairs = [p for name in TRAIN_FILES for p in alias_pairs(DATA_DIR / name)]
    random.Random(args.seed).shuffle(pairs)
    rows = []
    for subject, alias in pairs[: args.cases]:
        proposal = complete(few_shot(subject))
        new = bool(proposal) and subject_key(proposal) != subject_key(subject)
        rows.append(Proposal(
            subject, alias, proposal, new, right=subject_key(proposal) == subject_key(alias),
            round_trip=new and subject_key(complete(few_shot(proposal))) == subject_key(subject),
            subject_probability=subject_probability(few_shot(proposal), subject) if new else 0.0,
        ))
    n = len(rows)
    summary: dict[str, Any] = {"cases": n, "proposal_is_subject": sum(not r.new for r in rows) / n,
                               "proposal_right": sum(r.right for r in rows) / n}
    kept_by = {"round trip": [r for r in rows if r.round_trip]} | {
        f"subject probability >= {t}": [r for r in rows if r.new and r.subject_probability >= t]
        for t in TF_THRESHOLDS}
    for name, kept in kept_by.items():
        summary[name] = {"kept": len(kept), "right": sum(r.right for r in kept)}
    print(json.dumps(summary, indent=1))
    if args.json_path:
        args.json_path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
