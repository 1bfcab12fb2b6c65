"""Probes built from a split's own records rather than read from one record: the object neighbourhood.

An object-neighbourhood probe names an edit's new object under another relation, as the subject of another record's
prompt: after "BBC One, by" → "Sega", the probe "Sega is a twin city of" (from "Kraków is a twin city of"). It
mentions the edit's new object but asks nothing the edit changed, so its answer must stay the unedited model's, like
the other locality families (issue 24: "What is the population of Taipei?" after an edit that moves the Space Needle
to Taipei).

Construction, deterministic for a given list of cases (the whole file, before any shuffling or --limit, so a case's
probe does not depend on which slice is evaluated):

- A case's template is its edit's prompt with the first occurrence of the subject replaced by "{}". Cases whose
  prompt does not name the subject, and cases with several edits (MQuAKE), have none and get no probe.
- A template's answers are every target_true and target_new the cases with that template have.
- Two templates are taken to ask different relations when their answers are disjoint and they share no content
  word (a word of four letters or more outside RELATION_NEUTRAL_WORDS). The files name no relation. CounterFact's
  templates recur with many records, and one relation's templates share answers ("{} is located in" and "{},
  located in" both answer countries), so disjoint answers keep its other wordings out, along with related
  relations answered by the same entities (citizenship and location). zsRE's questions are mostly one record each,
  so their answers rarely overlap; the shared word ("Who is {}'s father?", "The father of {} is whom?") is what
  separates those. A heuristic: a file that named its relations would do better.
- Case i's donor is the first case after i, wrapping round, whose template asks a different relation from i's and
  whose filled prompt does not name i's subject. The probe is the donor's template filled with i's target_new.
- Its answer is the donor's target_true (its target_new when it has none): an answer of the donor relation's type,
  used only for the teacher-forced positions and the generation length; scoring compares the output with the
  unedited model's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from editdata.cases import Case, EditFact, Probe, names

SUBJECT_SLOT = "{}"
# Words of four letters or more that say nothing about the relation a template asks.
RELATION_NEUTRAL_WORDS = frozenset({"what", "which", "where", "when", "whom", "whose", "does", "that", "they", "this",
                                    "there", "name", "called", "with", "from", "into", "been", "were", "have", "also"})
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class _Templated:
    """A single-edit case's edit and its prompt with the subject taken out."""

    edit: EditFact
    template: str


def with_object_neighbourhood(cases: Sequence[Case]) -> list[Case]:
    """The cases, each with its object-neighbourhood probe added (see the module docstring); a case without a
    template, or without a donor of another relation among `cases`, is returned unchanged."""
    templated = [_templated(case) for case in cases]
    answers: dict[str, set[str]] = {}
    for item in templated:
        if item is not None:
            answers.setdefault(item.template, set()).update(_answer_keys(item.edit))
    relations = _Relations(answers)
    result: list[Case] = []
    for i, (case, item) in enumerate(zip(cases, templated, strict=True)):
        probe = None if item is None else _probe(item, templated, i, relations)
        added = case.object_neighbourhood if probe is None else (*case.object_neighbourhood, probe)
        result.append(replace(case, object_neighbourhood=added))
    return result


def template_of(edit: EditFact) -> str | None:
    """The edit's prompt with the first occurrence of its subject (as whole words, any case) replaced by "{}";
    None when the prompt does not name the subject."""
    match = re.search(rf"(?<!\w){re.escape(edit.subject)}(?!\w)", edit.prompt, re.IGNORECASE)
    if match is None or not edit.subject.strip():
        return None
    return edit.prompt[: match.start()] + SUBJECT_SLOT + edit.prompt[match.end() :]


def _templated(case: Case) -> _Templated | None:
    if len(case.edits) != 1:
        return None
    (edit,) = case.edits
    template = template_of(edit)
    return None if template is None or SUBJECT_SLOT in edit.subject else _Templated(edit, template)


class _Relations:
    """Whether two templates ask different relations (the module docstring's rule), remembered per pair."""

    def __init__(self, answers: dict[str, set[str]]) -> None:
        self._answers = answers
        self._words = {t: _content_words(t) for t in answers}
        self._known: dict[tuple[str, str], bool] = {}

    def differ(self, a: str, b: str) -> bool:
        key = (a, b) if a <= b else (b, a)
        if key not in self._known:
            self._known[key] = not (self._answers[a] & self._answers[b] or self._words[a] & self._words[b])
        return self._known[key]


def _probe(item: _Templated, templated: Sequence[_Templated | None], i: int, relations: _Relations) -> Probe | None:
    """Case i's probe: the first donor after it of another relation whose filled prompt leaves i's subject out."""
    for offset in range(1, len(templated)):
        donor = templated[(i + offset) % len(templated)]
        if donor is None or not relations.differ(item.template, donor.template):
            continue
        prompt = donor.template.replace(SUBJECT_SLOT, item.edit.target_new.strip(), 1)
        if names(prompt, item.edit.subject):
            continue
        return Probe(prompt, (donor.edit.target_true or donor.edit.target_new,))
    return None


def _content_words(template: str) -> set[str]:
    words = _WORD.findall(template.replace(SUBJECT_SLOT, " ").casefold())
    return {w for w in words if len(w) >= 4 and w not in RELATION_NEUTRAL_WORDS}


def _answer_keys(edit: EditFact) -> set[str]:
    return {a.strip().casefold() for a in (edit.target_true or "", edit.target_new) if a.strip()}
