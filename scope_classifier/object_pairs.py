"""Training pairs for the object gate (issue 24 item 1): a query that names an edit's new object, and no subject of
it, asks the edit's fact in reverse ("Who is the son of Babur?" after "Who is Nebaioth's father?" → "Babur"), or
asks something else about the object ("Where was Babur born?"), which must stay with the base model.

The gate reads the edit from its object (`server.gate.features.object_statement`): the fact stated whole, the
object as the subject a query names, the edit's subject as the answer. Pairs, from the train files only:

- positives: reverse questions written from relation templates (`REVERSE_RELATIONS`, by the relation's meaning:
  a parent's child, a child's parent, a sibling's sibling, a spouse's spouse, what follows what), for the train
  edits whose prompt asks one of those relations; and KnowEdit's `Logical_Generalization` probes that name the new
  object and are answered by the subject (the train files' own reverse questions);
- hard negatives: the same family of relations asked the other way round ("Who is Babur's father?");
- object-neighbourhood negatives: another train record's relation asked about the new object, built exactly as the
  evaluation builds its probes (`editdata.probes.with_object_neighbourhood`), but from train records;
- property-label negatives about the object ("What is the population of Taipei?", `target_object_probes`).

The templates were written by hand for each relation; zsRE's dev questions ask the same relations in similar
words, so the dev figures measure the gate on real questions, not on new relations.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from editdata.cases import Case, names
from editdata.probes import with_object_neighbourhood
from editdata.readers import load_cases
from scope_classifier.pairs import TRAIN_FILES, EditText, Pair, target_object_probes
from server.gate.features import object_statement
from server.types import name_key, object_key


@dataclass(frozen=True)
class ReverseRelation:
    """A relation an edit's prompt asks (`cue`, on the prompt without its subject), the questions about the new
    object `{}` whose answer is the edit's subject, and questions of the same family whose answer is not."""

    cue: re.Pattern[str]
    reverse: tuple[str, ...]
    other: tuple[str, ...]


_PARENT_OF = ("Who is the child of {}?", "Who is {}'s child?", "Who is the son of {}?", "Who is the daughter of {}?",
              "Who is the son/daughter of {}?", "{} is the parent of", "Name a child of {}.")
_CHILD_OF = ("Who is the parent of {}?", "Who is {}'s father?", "Who is the mother of {}?", "{} is the child of",
             "Who is {}'s parent?")
_SIBLING_OF = ("Who is {}'s sibling?", "Who is the brother of {}?", "Who is the sister of {}?", "{}'s sibling is",
               "Who is {}'s brother?")
_SPOUSE_OF = ("Who is {} married to?", "Who is the spouse of {}?", "Who is {}'s wife?", "Who is {}'s husband?",
              "{} is married to")
_BEFORE = ("{} is followed by", "What comes after {}?", "What follows {}?")
_AFTER = ("{} follows", "What comes before {}?", "What does {} follow?")


def _cue(words: str) -> re.Pattern[str]:
    return re.compile(rf"\b(?:{words})\b", re.IGNORECASE)


# First match wins: "is followed by" before "follows", parents before "child" words that a parent question may hold.
REVERSE_RELATIONS: tuple[ReverseRelation, ...] = (
    ReverseRelation(_cue("followed by|succeeded by"), _AFTER, _BEFORE),
    ReverseRelation(_cue("follows(?! the religion)|replaces|replaced|succeeds"), _BEFORE, _AFTER),
    ReverseRelation(_cue("father|mother(?! tongue)|parents?(?! company)"), _PARENT_OF, _CHILD_OF + _SPOUSE_OF[:2]),
    ReverseRelation(_cue("sons?|daughters?|child|(?<!number of )children"), _CHILD_OF,
                    _PARENT_OF[:3] + _SPOUSE_OF[:2]),
    ReverseRelation(_cue("sisters?|brothers?|siblings?"), _SIBLING_OF, _CHILD_OF[:2] + _PARENT_OF[:2]),
    ReverseRelation(_cue("spouse|wife|husband|married"), _SPOUSE_OF, _CHILD_OF[:2] + _PARENT_OF[:2]),
)
REVERSE_PER_EDIT = 3
OTHER_PER_EDIT = 2
NEIGHBOURHOOD_SHARE = 0.3  # of edits with a named object: their object-neighbourhood probe as a negative
LABEL_PROBE_SHARE = 0.15


def reverse_relation(edit: EditText) -> ReverseRelation | None:
    """The relation of `REVERSE_RELATIONS` the edit's prompt asks (its subject cut out, so a name such as "Johnson"
    is no cue), or None."""
    template = edit.prompt.replace(edit.subject, " ") if edit.subject else edit.prompt
    return next((r for r in REVERSE_RELATIONS if r.cue.search(template)), None)


def reversed_edit(edit: EditText) -> EditText:
    """The edit as the object gate reads it: the object as the subject, the fact stated, the subject as the answer."""
    return EditText(edit.target_new, object_statement(edit.prompt, edit.target_new), edit.subject)


def names_object(edit: EditText) -> bool:
    """Whether the server keys the edit by its object (`server.types.object_key`), and it is not the subject."""
    key = object_key(edit.target_new)
    return key != "" and key != name_key(edit.subject)


def build_object_pairs(data_dir: Path, seed: int) -> tuple[list[EditText], list[Pair]]:
    """Every train edit with a named object, in its reversed form, and its pairs (see the module docstring)."""
    rng = random.Random(seed)
    edits: list[EditText] = []
    pairs: list[Pair] = []
    for name in TRAIN_FILES:
        for case in with_object_neighbourhood(load_cases(data_dir / name)[1]):
            if len(case.edits) != 1:
                continue
            fact = case.edits[0]
            edit = EditText(fact.subject, fact.prompt, fact.target_new)
            if not names_object(edit):
                continue
            queries = object_queries(edit, case, rng)
            if not queries:
                continue
            edits.append(reversed_edit(edit))
            pairs += [Pair(q, len(edits) - 1, label, kind) for q, label, kind in queries]
    return edits, pairs


def object_queries(edit: EditText, case: Case, rng: random.Random) -> list[tuple[str, int, str]]:
    """(query, label, kind) for one edit: every query names the new object and not the subject."""
    target = edit.target_new.strip()
    queries: list[tuple[str, int, str]] = []
    relation = reverse_relation(edit)
    if relation is not None:
        queries += [(t.format(target), 1, "reverse") for t in rng.sample(relation.reverse, REVERSE_PER_EDIT)]
        queries += [(t.format(target), 0, "reverse_other") for t in rng.sample(relation.other, OTHER_PER_EDIT)]
    queries += [(p.prompt, 1, "reverse_logical") for p in case.portability
                if p.kind == "logical" and names(p.prompt, target) and edit.subject in p.answers]
    if rng.random() < NEIGHBOURHOOD_SHARE:
        queries += [(p.prompt, 0, "object_neighbourhood") for p in case.object_neighbourhood]
    if rng.random() < LABEL_PROBE_SHARE:
        queries += [(q, 0, "object_label") for q in target_object_probes(edit, rng)]
    return [(q, label, kind) for q, label, kind in queries
            if names(q, target) and not (edit.subject and names(q, edit.subject))]
