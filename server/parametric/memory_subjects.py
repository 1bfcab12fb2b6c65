"""Real subjects to ask an edit's question about, for T-Patcher's memory of inputs its neuron must stay silent on.

A neuron trained to stay silent only on the edit's question about a few unlike stand-ins ("John Smith", "Paris")
learns the relation rather than the subject and fires on the neighbourhood: another singer asked "plays", another
town asked "is located in" (docs/BENCHMARKS.md, T-Patcher). The subjects a training file asks the same question
about are of the same kind as those neighbours. A table maps each prompt template of a CounterFact-format training
file ("What does {} play? They play") to the subjects its records ask it about; it is built once by
scripts/build_tpatcher_subjects.py and shipped in artifacts/tpatcher/, so the server reads no data set.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from server.parametric.wordings import template

# Shipped beside the other artifacts the server reads.
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "artifacts" / "tpatcher" / "subjects.json"


@dataclass(frozen=True)
class SubjectTable:
    by_template: Mapping[str, tuple[str, ...]]  # prompt template → the distinct subjects asked it, sorted

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, object]]) -> SubjectTable:
        """Each record's subject under its prompt's template (EasyEdit flat CounterFact)."""
        subjects: defaultdict[str, set[str]] = defaultdict(set)
        for record in records:
            subject = str(record.get("subject", ""))
            known = template(str(record.get("prompt", "")), subject)
            if known is not None:
                subjects[known].add(subject)
        return cls({t: tuple(sorted(s)) for t, s in sorted(subjects.items())})

    @classmethod
    def load(cls, path: Path) -> SubjectTable:
        return cls({t: tuple(s) for t, s in json.loads(path.read_text())["templates"].items()})

    def save(self, path: Path, source: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"source": source, "templates": {t: list(s) for t, s in self.by_template.items()}}
        path.write_text(json.dumps(body, ensure_ascii=False, indent=0) + "\n")

    def draw(self, prompt: str, subject: str, n: int) -> tuple[str, ...]:
        """Up to n subjects other than `subject`: those asked the prompt's template first, then any, each group in
        an order drawn from a seed of the prompt and subject, so an edit gets the same ones on every run."""
        rng = random.Random(hashlib.sha256(f"{subject}\n{prompt}".encode()).digest())
        known = template(prompt, subject)
        same = [s for s in self.by_template.get(known or "", ()) if s != subject]
        chosen = rng.sample(same, min(n, len(same)))
        if len(chosen) < n:  # an unknown template, or one asked about few subjects: fill from all of them
            taken = {subject, *chosen}
            rest = sorted({s for group in self.by_template.values() for s in group} - taken)
            chosen += rng.sample(rest, min(n - len(chosen), len(rest)))
        return tuple(chosen)


@cache
def shipped_subjects(path: Path = DEFAULT_FILE) -> SubjectTable:
    """The table in artifacts/tpatcher/, read once per process."""
    return SubjectTable.load(path)
