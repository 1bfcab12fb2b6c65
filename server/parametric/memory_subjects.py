"""Real subjects to ask an edit's question about, for T-Patcher's memory of inputs its neuron must stay silent on.

A neuron trained to stay silent only on the edit's question about a few unlike stand-ins ("John Smith", "Paris")
learns the relation rather than the subject and fires on the neighbourhood: another singer asked "plays", another
town asked "is located in" (docs/BENCHMARKS.md, T-Patcher). The subjects a training file asks the same question
about are of the same kind as those neighbours. A table maps each prompt template of a CounterFact-format training
file ("What does {} play? They play") to the subjects its records ask it about; it is built once by
scripts/build_tpatcher_subjects.py and shipped in artifacts/tpatcher/, so the server reads no data set.

The table also keeps each record's answer before the edit. CounterFact's neighbourhood is other subjects with the
edit's old answer ("Eschwege is located in" beside a German town's edit): at the last layer the question about them
reads much as the edit's does, since the model is about to give the same answer. Random subjects asked the question
mostly have other answers and do not teach the neuron that difference, so an edit with a known old answer draws some
subjects that share it first.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

from server.parametric.wordings import template

# Shipped beside the other artifacts the server reads.
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "artifacts" / "tpatcher" / "subjects.json"


@dataclass(frozen=True)
class SubjectTable:
    by_template: Mapping[str, tuple[str, ...]]  # prompt template → the distinct subjects asked it, sorted
    # prompt template → subject → the answer its record gives (before the edit), where the record has one
    answers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, object]]) -> SubjectTable:
        """Each record's subject under its prompt's template, and its `ground_truth` (EasyEdit flat CounterFact)."""
        subjects: defaultdict[str, set[str]] = defaultdict(set)
        answers: defaultdict[str, dict[str, str]] = defaultdict(dict)
        for record in records:
            subject = str(record.get("subject", ""))
            known = template(str(record.get("prompt", "")), subject)
            if known is None:
                continue
            subjects[known].add(subject)
            truth = record.get("ground_truth")
            if isinstance(truth, str) and truth:
                answers[known].setdefault(subject, truth)  # the first record's, should two disagree
        return cls({t: tuple(sorted(s)) for t, s in sorted(subjects.items())},
                   {t: dict(sorted(a.items())) for t, a in sorted(answers.items())})

    @classmethod
    def load(cls, path: Path) -> SubjectTable:
        body = json.loads(path.read_text())
        return cls({t: tuple(s) for t, s in body["templates"].items()}, body.get("answers", {}))

    def save(self, path: Path, source: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"source": source, "templates": {t: list(s) for t, s in self.by_template.items()},
                "answers": self.answers}
        path.write_text(json.dumps(body, ensure_ascii=False, indent=0) + "\n")

    @cached_property
    def every_subject(self) -> tuple[str, ...]:
        """Every subject of the table, sorted."""
        return tuple(sorted({s for group in self.by_template.values() for s in group}))

    @cached_property
    def by_answer(self) -> Mapping[str, tuple[tuple[str, str], ...]]:
        """`answer_key` of an answer → the (template, subject) pairs that give it, sorted."""
        pairs: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
        for known, group in self.answers.items():
            for subject, answer in group.items():
                pairs[answer_key(answer)].append((known, subject))
        return {a: tuple(sorted(p)) for a, p in pairs.items()}

    def answered(self, answer: str, known: str | None) -> tuple[list[str], list[str]]:
        """The subjects whose answer is `answer` (case and spacing aside): (those asked the template `known`, those
        asked only others), each sorted."""
        pairs = self.by_answer.get(answer_key(answer), ())
        same = [s for t, s in pairs if t == known]
        return same, sorted({s for t, s in pairs if t != known} - set(same))

    def draw(self, prompt: str, subject: str, n: int, answer: str | None = None,
             same_answer: int = 0) -> tuple[str, ...]:
        """Up to n subjects other than `subject`: up to `same_answer` whose answer is `answer` (asked the prompt's
        template first), then those asked the prompt's template, then any; each group in an order drawn from a seed
        of the prompt and subject, so an edit gets the same ones on every run."""
        rng = random.Random(hashlib.sha256(f"{subject}\n{prompt}".encode()).digest())
        known = template(prompt, subject)
        alike, alike_elsewhere = self.answered(answer, known) if answer and same_answer else ([], [])
        chosen: list[str] = []
        # each group with how many of the n may be drawn by the time it is done
        for group, upto in ((alike, same_answer), (alike_elsewhere, same_answer),
                            (self.by_template.get(known or "", ()), n), (self.every_subject, n)):
            room = min(upto, n) - len(chosen)
            if room <= 0:
                continue
            taken = {subject, *chosen}
            fresh = [s for s in group if s not in taken]
            chosen += rng.sample(fresh, min(room, len(fresh)))
        return tuple(chosen)

    def questions(self, prompt: str, subject: str, n: int, exclude: Iterable[str] = (),
                  answers: Iterable[str | None] = ()) -> tuple[str, ...]:
        """Up to n templates of the table that ask another kind of question than the prompt's (other questions to ask
        `subject`), drawn with a seed of the prompt and subject; those in `exclude` are then left out (the draw stays
        the same for the rest, so an edit with nothing of its kind in the table keeps the questions it was measured
        with). Another template is of the prompt's kind when their answers overlap (`same_kind`), or, where the
        prompt's template is not in the table, when its answers include one of `answers` (the edit's old and new):
        "{}'s profession is a" beside "The profession of {} is" reads like the edit, and a neuron taught to stay
        silent on it does not generalize."""
        if n <= 0:
            return ()
        rng = random.Random(hashlib.sha256(f"questions\n{subject}\n{prompt}".encode()).digest())
        known = template(prompt, subject)
        kind = self.answer_set(known or "") or frozenset(answer_key(a) for a in answers if a)
        others = [t for t in self.by_template if t != known and not same_kind(kind, self.answer_set(t))]
        left_out = set(exclude)
        return tuple(t for t in rng.sample(others, min(n, len(others))) if t not in left_out)

    def answer_set(self, template_: str) -> frozenset[str]:
        """The `answer_key`s of the answers the template's records give (empty for a template not in the table)."""
        return self.answer_sets.get(template_, frozenset())

    @cached_property
    def answer_sets(self) -> Mapping[str, frozenset[str]]:
        """Template → the `answer_key`s of its records' answers."""
        return {t: frozenset(answer_key(a) for a in group.values()) for t, group in self.answers.items()}


# Templates of one relation share most of their answers (professions, languages, instruments: 0.6 to 1.0 of the
# smaller set in the shipped table) and unrelated ones none; relations of one answer type (cities of birth and of
# death, countries of origin and of citizenship) spread between 0.1 and 0.6, so the cut-off is a judgement, not a gap:
# a quarter leaves out each relation's other wordings and some questions of its answer type.
SAME_KIND_OVERLAP = 0.25


def same_kind(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether two answer sets overlap by at least SAME_KIND_OVERLAP of the smaller one (an edit's answers against a
    template's: one shared answer)."""
    return bool(a and b) and len(a & b) >= SAME_KIND_OVERLAP * min(len(a), len(b))


def answer_key(answer: str) -> str:
    """An answer as the table compares them: case-folded, whitespace collapsed."""
    return " ".join(answer.casefold().split())


@cache
def shipped_subjects(path: Path = DEFAULT_FILE) -> SubjectTable:
    """The table in artifacts/tpatcher/, read once per process."""
    return SubjectTable.load(path)
