"""Prompts about other subjects that an edit must leave alone, mined from a training file.

A rank-one update moves every key in proportion to its overlap with the edited one under C⁻¹, so a
neighbour (another subject asked the same question, "The mother tongue of Montesquieu is") can pick
up part of the change. The value optimisation measures its own effect on such prompts and pays for
changing them (targets.py). A CounterFact training record gives, for its prompt's template, its own
prompt (another subject, same wording) and its locality prompt (another subject, same relation).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server.parametric.wordings import template


@dataclass(frozen=True)
class Neighbours:
    by_template: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # template → prompts about others

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, object]]) -> Neighbours:
        """Each record's prompt and locality prompt, under its prompt's template (EasyEdit flat CounterFact)."""
        found: defaultdict[str, list[str]] = defaultdict(list)
        for record in records:
            known = template(str(record.get("prompt", "")), str(record.get("subject", "")))
            if known is not None:
                found[known] += [str(record[k]) for k in ("prompt", "locality_prompt") if record.get(k)]
        return cls({t: tuple(dict.fromkeys(prompts)) for t, prompts in found.items()})

    @classmethod
    def load(cls, path: Path) -> Neighbours:
        return cls.from_records(json.loads(path.read_text()))

    def of(self, prompt: str, subject: str, n: int) -> tuple[str, ...]:
        """Up to n prompts of the same template's records that do not name `subject`."""
        known = template(prompt, subject)
        if n <= 0 or known is None:
            return ()
        return tuple(p for p in self.by_template.get(known, ()) if subject not in p)[:n]
