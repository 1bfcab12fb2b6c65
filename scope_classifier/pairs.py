"""Training pairs for the scope classifier, from the train files only (../shared/data/README.md).

Positives (the query is about the edited fact): the edit's own prompt, its paraphrases, and
subject-alias rewordings (KnowEdit Subject_Aliasing). Negatives: neighbourhood prompts (the same
relation of another subject), the same subject under another relation (KnowEdit
Relation_Specificity), and hard negatives that retrieval finds among the other edits (added in
train.py, where the encoder is at hand), which also stand for unrelated queries.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAIN_FILES = (
    "counterfact/train.json",
    "zsre/train-1k.json",
    "knowedit/wiki_counterfact_train.json",
    "knowedit/wiki_recent_train.json",
)


@dataclass(frozen=True)
class EditText:
    subject: str
    prompt: str
    target_new: str


@dataclass(frozen=True)
class Pair:
    query: str
    edit: int  # index into the edit list
    label: int  # 1: in scope
    kind: str  # prompt, paraphrase, alias, neighbourhood, same_subject, retrieved


def build_pairs(data_dir: Path, max_cases_per_file: int | None, seed: int) -> tuple[list[EditText], list[Pair]]:
    edits: list[EditText] = []
    pairs: list[Pair] = []
    rng = random.Random(seed)
    for name in TRAIN_FILES:
        records = json.loads((data_dir / name).read_text())
        rng.shuffle(records)
        for record in records[:max_cases_per_file]:
            built = _from_record(record)
            if built is None:
                continue
            edit, queries = built
            edits.append(edit)
            pairs += [Pair(q, len(edits) - 1, label, kind) for q, label, kind in queries if q.strip()]
    return edits, pairs


def _from_record(r: dict[str, Any]) -> tuple[EditText, list[tuple[str, int, str]]] | None:
    if "src" in r:  # MEND zsRE
        if not r.get("alt"):
            return None
        edit = EditText(r["subject"], r["src"], r["alt"])
        # Its `loc` NQ questions are kept out: scope_classifier/evaluate.py measures unrelated_fpr on them.
        return edit, [(r["src"], 1, "prompt"), (r.get("rephrase", ""), 1, "paraphrase")]
    if not r.get("target_new") or not r.get("prompt"):
        return None
    edit = EditText(r["subject"], r["prompt"], r["target_new"])
    queries = [(r["prompt"], 1, "prompt")]
    if "rephrase_prompt" in r:
        queries.append((r["rephrase_prompt"], 1, "paraphrase"))
    if "locality_prompt" in r:  # EasyEdit flat CounterFact
        queries.append((r["locality_prompt"], 0, "neighbourhood"))
    locality = r.get("locality") or {}
    portability = r.get("portability") or {}
    queries += [(item["prompt"], 0, "same_subject") for item in locality.get("Relation_Specificity", [])]
    queries += [(item["prompt"], 1, "alias") for item in portability.get("Subject_Aliasing", [])]
    return edit, queries
