#!/usr/bin/env python
"""Could an edit be found by its new object, with the counterfactual model's judgement as the only gate? (issue 24)

A reverse question names the edit's new object, not its subject ("Who is Marian Clairmont's sister?" after
"Claire Clairmont's sister is Marian Clairmont"), so the subject-keyed gate never finds the edit. Looking the edit
up by the object the query names is exact and cheap; what decides is whether the counterfactual model, handed that
edit, answers the reverse questions and abstains on the other questions that name the object (the
"object neighbourhood": "Paris is located in the country of" after an edit whose new object is Paris).

For each case, one edit at a time, no gate: the reverse probes of `zsre/inverse-dev.json` (answered: judged and,
unless the model abstains, a greedy answer scored by exact match) and the object-neighbourhood probes of
`counterfact/val.json` (abstained or not, and the answer when not). Whether the answer names the edit's subject is
recorded for both: a reverse question's answer is the subject, so that check could stand beside the judgement.
Both files are dev/validation: report only, nothing is fitted.

    .venv/bin/python scripts/measure_object_keys.py --reverse-cases 100 --neighbourhood-cases 200 --json out.json

About 8 minutes on one busy core (Gemma-3-270M).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from editdata.cases import EditFact, names  # noqa: E402
from editdata.metrics import exact_match  # noqa: E402
from editdata.paths import DATA_DIR  # noqa: E402
from editdata.probes import with_object_neighbourhood  # noqa: E402
from editdata.readers import load_cases  # noqa: E402
from server.app import build_counterfactual  # noqa: E402
from server.config import Config  # noqa: E402
from server.models.load import load_model  # noqa: E402
from server.types import Edit, GenerationOptions  # noqa: E402


def as_edit(fact: EditFact) -> Edit:
    return Edit(id="case", namespace="measure", subject=fact.subject, prompt=fact.prompt, target_new=fact.target_new,
                target_true=fact.target_true, paraphrases=(), created_at_unix_s=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reverse-cases", type=int, default=100)
    parser.add_argument("--neighbourhood-cases", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = Config()
    generator, off = build_counterfactual(config, load_model(config.model, config.cache_dir, 1))
    if generator is None:
        raise SystemExit(f"no counterfactual model: {off}")
    options = GenerationOptions(max_new_tokens=8)

    reverse = []
    for case in load_cases(DATA_DIR / "zsre" / "inverse-dev.json")[1][: args.reverse_cases]:
        edit = as_edit(case.edits[0])
        for probe in case.reverse:
            abstains = generator.judge(edit, probe.prompt).abstains
            text = "" if abstains else generator.generate(probe.prompt, edit, options).text
            reverse.append({"question": probe.prompt, "object": edit.target_new, "subject": edit.subject,
                            "abstains": abstains, "answer": text, "names_object": names(probe.prompt, edit.target_new),
                            "answers_subject": not abstains and names(text, edit.subject),
                            "em": not abstains and exact_match(text, probe.answers)})
    neighbourhood = []
    cases = load_cases(DATA_DIR / "counterfact" / "val.json")[1][: args.neighbourhood_cases]
    for case in with_object_neighbourhood(cases):
        edit = as_edit(case.edits[0])
        for probe in case.object_neighbourhood:
            abstains = generator.judge(edit, probe.prompt).abstains
            text = "" if abstains else generator.generate(probe.prompt, edit, options).text
            neighbourhood.append({"question": probe.prompt, "object": edit.target_new, "subject": edit.subject,
                                  "abstains": abstains, "answer": text,
                                  "answers_subject": not abstains and names(text, edit.subject)})

    def count(rows: list[dict[str, object]], key: str) -> str:
        return f"{sum(bool(row[key]) for row in rows)}/{len(rows)}"

    print(json.dumps({"reverse: names the object": count(reverse, "names_object"),
                      "reverse: abstained": count(reverse, "abstains"), "reverse: answered, EM": count(reverse, "em"),
                      "reverse: the answer names the subject": count(reverse, "answers_subject"),
                      "object neighbourhood: abstained": count(neighbourhood, "abstains"),
                      "object neighbourhood: the answer names the subject": count(neighbourhood, "answers_subject")},
                     indent=1))
    if args.json:
        args.json.write_text(json.dumps({"reverse": reverse, "object_neighbourhood": neighbourhood}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
