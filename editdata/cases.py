"""Evaluation cases: what every benchmark format is read into (`editdata.readers`), and which probes ask a
fact that another edit changes.

A probe's first answer is the canonical one (used for teacher forcing); the rest are aliases that also count
for exact match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from editdata.metrics import normalise


@dataclass(frozen=True)
class Probe:
    """A prompt and its acceptable answers; the first answer is canonical (teacher forcing). `kind` names what a
    portability probe tests (PORTABILITY_KINDS); "" for the others."""

    prompt: str
    answers: tuple[str, ...]
    kind: str = ""


# What a portability probe asks: the subject under an alias, a one-hop consequence of the new object, or a logical
# consequence of the edited relation (KnowEdit's Subject_Aliasing, Reasoning, Logical_Generalization).
PORTABILITY_KINDS: tuple[str, ...] = ("alias", "reasoning", "logical")


@dataclass(frozen=True)
class EditFact:
    """One fact to register with the server: `prompt` completed by `target_new` instead of `target_true`."""

    subject: str
    prompt: str
    target_new: str
    target_true: str | None


@dataclass(frozen=True)
class Case:
    """One benchmark record: its edit(s) and the probes scored after they are in."""

    case_id: str
    edits: tuple[EditFact, ...]
    reliability: tuple[Probe, ...] = ()
    generalization: tuple[Probe, ...] = ()
    locality: tuple[Probe, ...] = ()
    same_subject: tuple[Probe, ...] = ()
    # The edit's new object as the subject of another relation (editdata.probes): the unedited answer must stay.
    object_neighbourhood: tuple[Probe, ...] = ()
    portability: tuple[Probe, ...] = ()
    reverse: tuple[Probe, ...] = ()
    multi_hop: tuple[Probe, ...] = ()


def names(text: str, subject: str) -> bool:
    """The subject occurs in the text as whole words, ignoring case ("Boniface VIII" does not name "Boniface VII")."""
    text, subject = text.casefold(), subject.casefold()
    return subject in text and re.search(_whole_words(subject), text) is not None


def _whole_words(subject: str) -> str:
    """A pattern matching `subject` not inside a longer word."""
    return rf"(?<!\w){re.escape(subject)}(?!\w)"


# Capitalised words that open a sentence without being part of a name ("The mother of ...", "What ...").
_OPENING_WORDS = frozenset({
    "the", "a", "an", "in", "on", "of", "at", "to", "for", "by", "what", "which", "who", "whom", "whose", "where",
    "when", "how", "is", "was", "are", "were", "does", "did", "do", "has", "had",
})


def names_alone(text: str, subject: str) -> bool:
    """`names`, and at least one occurrence is not part of a longer name: no capitalised word joined to it by a space
    right before or after ("Nintendo DS Lite", "The Explosive Freddy Cannon" and "Vanderbilt University Department
    of ..." are other entities than "Nintendo DS", "Freddy Cannon" and "Vanderbilt University"; "In France, Mallory
    Reaves" is not). A capitalised first word of the text counts unless it is an opening word ("The", "What")."""
    for match in re.finditer(_whole_words(subject), text, flags=re.IGNORECASE):
        start, end = match.start(), match.end()
        before, after = text[:start].split(), text[end:].split()
        # a capitalised word before it, nothing after that word ("France," ends a clause), not an opening word
        name_before = (start > 0 and text[start - 1].isspace() and bool(before) and before[-1][0].isupper()
                       and before[-1][-1].isalnum()
                       and not (len(before) == 1 and before[0].casefold() in _OPENING_WORDS))
        name_after = end < len(text) and text[end].isspace() and bool(after) and after[0][0].isupper()
        if not (name_before or name_after):
            return True
    return False


def asks_edited_fact(probe: Probe, edit: EditFact) -> bool:
    """A probe that must not change, which asks the fact an edit changes: it is that edit's prompt word for
    word, or it names that edit's subject (`names_alone`) and expects that edit's original answer.

    Such a probe ought to follow the edit, so no editor can keep it unchanged; the harness reports locality with
    and without them. In sequential evaluation the edit is another case's (CounterFact reuses subjects and
    relations); in zsRE's `Relation_Specificity` probes it is often the case's own ("The mother of Mallory
    Reaves is", expecting the mother the edit replaces).
    """
    if normalise(probe.prompt) == normalise(edit.prompt):
        return True
    original = _answer_key(edit.target_true or "")
    expects_original = bool(original) and original in {_answer_key(a) for a in probe.answers}
    return expects_original and names_alone(probe.prompt, edit.subject)


class EditedFacts:
    """Many edits, indexed so that `asks_edited_fact` is tried only on those that could match a probe: the
    ones with the probe's prompt, and the ones whose original answer the probe expects."""

    def __init__(self, edits: Iterable[EditFact]) -> None:
        self._by_prompt: dict[str, list[EditFact]] = {}
        self._by_original: dict[str, list[EditFact]] = {}
        for edit in edits:
            self._by_prompt.setdefault(normalise(edit.prompt), []).append(edit)
            if original := _answer_key(edit.target_true or ""):
                self._by_original.setdefault(original, []).append(edit)

    def asked_by(self, probe: Probe) -> list[EditFact]:
        """The edits whose fact `probe` asks (`asks_edited_fact`), each once."""
        candidates = self._by_prompt.get(normalise(probe.prompt), []) + [
            edit for answer in {_answer_key(a) for a in probe.answers} for edit in self._by_original.get(answer, [])]
        unique = list({id(edit): edit for edit in candidates}.values())
        return [edit for edit in unique if asks_edited_fact(probe, edit)]


def _answer_key(answer: str) -> str:
    return answer.strip().casefold()
