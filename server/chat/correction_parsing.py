"""The extraction model's outputs, validated into an edit: the subject snapped onto the question's words, the new
answer onto a span of the correction that is not negated and not the answer being corrected."""

from __future__ import annotations

import re

from server.chat.correction_prompts import NOT_GIVEN, Exchange
from server.chat.wording import (
    ARTICLES,
    FILLER,
    FUNCTION_WORDS,
    LEADING_WORDS,
    clean,
    contains,
    drop_article,
    find,
    is_function_words,
    is_name,
    occurrences,
    question_names,
    question_spans,
    whole_name,
    word_index,
    word_texts,
    words,
)
from server.errors import FailedPrecondition
from server.types import EditSpec

MAX_TARGET_WORDS = 6
MAX_TARGET_CHARS = 80
MAX_CLOZE_CHARS = 200
# A negation right before a span, at most one word away ("not Seattle", "isn't in Seattle"; not "Not Lagos, Abuja").
NEGATION = re.compile(r"\b(not|never|no longer|isn't|wasn't|aren't|weren't|doesn't|didn't|don't)\s+(\w+\s+)?$", re.I)
BLAND_ENDING = " The answer is"  # makes a cloze of a question the extraction could not rephrase


def build_spec(question: str, subject: str, cloze: str | None, target: str, lead: str = "") -> EditSpec:
    """The edit: the cloze (or the question made one) continued by the target.

    `lead` is what joins them in the correction ("in" of "born in Ulm"); it joins the prompt when the cloze does
    not already end with a joining word ("Albert Einstein was born" + "in"; "Nokia is located in" stays).
    """
    if cloze is None or contains(cloze, target):  # a cloze that already says the answer cannot be continued by it
        cloze = bland_cloze(question)
    elif lead and cloze.split()[-1].lower() not in LEADING_WORDS:
        cloze = f"{cloze} {lead}"
    return EditSpec(subject=subject, prompt=cloze, target_new=target, paraphrases=with_question((), cloze, question))


def with_question(paraphrases: tuple[str, ...], prompt: str, question: str) -> tuple[str, ...]:
    question = question.strip()
    if question == prompt.strip() or question in paraphrases:
        return paraphrases
    return (*paraphrases, question)


def bland_cloze(question: str) -> str:
    return question.strip() + BLAND_ENDING


def parse_subject_line(output: str, question: str) -> tuple[str, str | None]:
    """The subject as written in the question, and the cloze when it is usable (None otherwise)."""
    raw_subject, _, raw_cloze = output.partition("|")
    subject = snap_subject(clean(raw_subject), question)
    if subject is None:
        raise FailedPrecondition(
            f"could not tell what the question {question!r} is about (the extraction read {clean(raw_subject)!r}, "
            "which is not in the question); send subject, prompt and target_new instead"
        )
    cloze = clean(raw_cloze)
    at = cloze.lower().find(subject.lower())
    if not cloze or at < 0 or len(cloze) > MAX_CLOZE_CHARS:
        return subject, None
    return subject, cloze[:at] + subject + cloze[at + len(subject):]  # the subject exactly as the question has it


def snap_subject(read: str, question: str) -> str | None:
    """The words of the question that name what the model read as the subject, or None.

    In order: the model's words found in the question; else the longest run of question words found among the
    model's words ("Yo-Yo Ma plays" -> "Yo-Yo Ma"); else a question word that begins a word of the model's
    ("Japanese" -> "Japan"); else the question's only name, when it has exactly one (the model named the answer,
    "Earth", for "Which planet is closest to the Sun?"). A subject is then completed to the whole name the
    question writes ("Summer Olympics" -> "2016 Summer Olympics"), and a description holding one name is
    reduced to it ("mayor of Paris" -> "Paris"), as CounterFact subjects are names.
    """
    found = _read_in_question(read, question)
    if found is None:
        return None
    names = question_names(" " + found)
    if found[:1].islower() and len(names) == 1:
        found = names[0]
    at = word_index(question, found)
    start, end = whole_name(question, at, at + len(found))
    return question[start:end]


def _read_in_question(read: str, question: str) -> str | None:
    exact = find(question, drop_article(read, question))
    if exact is not None and not is_function_words(exact) and exact.strip() != question.strip():
        return exact
    spans = question_spans(question)
    for span in spans:
        if contains(read, span):
            return span
    read_words = [w.lower() for w in word_texts(read)]
    for span in spans:
        if " " not in span and len(span) >= 4 and any(w.startswith(span.lower()) for w in read_words):
            return span
    names = question_names(question)
    return names[0] if len(names) == 1 else None


def parse_target(
    output: str, correction: str, exchange: Exchange, subject: str, cloze: str | None
) -> tuple[str | None, str]:
    """The new answer: the longest candidate span of the correction that the model's output names, completed to
    the whole name the correction writes ("Mercury" -> "Freddie Mercury"); or None and why."""
    text = _answer_text(output, cloze)
    if not text or text.lower() in (NOT_GIVEN, "none", "unknown"):
        return None, "no new answer given"
    candidates = answer_spans(correction, exchange, subject)
    if not candidates:
        return None, "nothing in it names a new answer"
    for start, end in candidates:
        if contains(text, correction[start:end]):
            whole = whole_name(correction, start, end, blocked=occurrences(correction, subject))
            if whole != (start, end):
                return correction[whole[0]:whole[1]], ""
            return find(text, correction[start:end]), ""  # as the model wrote it: it capitalises names
    return None, f"the extraction read {text!r}, which the correction does not say"


def only_name(correction: str, exchange: Exchange, subject: str) -> str | None:
    """The one name among the correction's candidate answers, if it has exactly one ("Incorrect. Jeff Bezos
    founded Amazon." with subject Amazon): the last resort when the model's outputs name no candidate."""
    blocked = occurrences(correction, subject)
    names = {
        correction[a:b]
        for start, end in answer_spans(correction, exchange, subject)
        if is_name(correction, start, end)
        for a, b in [whole_name(correction, start, end, blocked)]
    }
    return names.pop() if len(names) == 1 else None


def answer_spans(correction: str, exchange: Exchange, subject: str) -> list[tuple[int, int]]:
    """(start, end) of the spans of the correction that can be its new answer, longest first.

    A span starts and ends with a word that is neither filler nor a function word, has at most
    MAX_TARGET_WORDS words, is not (part of) a mention of the subject, is not negated ("not Seattle",
    "isn't in Seattle") and is not what the answer being corrected said.
    """
    found = words(correction)
    blocked = occurrences(correction, subject)
    # What the corrected answer said, less its mentions of the subject ("The Sydney Opera House is in Melbourne"
    # rules out Melbourne, not Sydney).
    old_answer = re.sub(rf"(?<!\w){re.escape(subject)}(?!\w)", " | ", exchange.answer, flags=re.I)
    spans = []
    for i in range(len(found)):
        for j in range(i, min(i + MAX_TARGET_WORDS, len(found))):
            first, last = found[i].group().lower(), found[j].group().lower()
            if {first, last} & (FILLER | FUNCTION_WORDS):
                continue
            start, end = found[i].start(), found[j].end()
            span = correction[start:end]
            if (
                len(span) <= MAX_TARGET_CHARS
                and not any(start < b and a < end for a, b in blocked)
                and span.lower() != subject.lower()
                and not NEGATION.search(correction[:start])
                and not contains(old_answer, span)
            ):
                spans.append((start, end))
    return sorted(spans, key=lambda s: s[1] - s[0], reverse=True)


def lead_in(correction: str, target: str) -> str:
    """The prepositions right before the target in the correction ("born in Ulm" -> "in"), or ""."""
    at = word_index(correction, target)
    before = word_texts(correction[:at]) if at > 0 else []
    lead: list[str] = []
    while before and before[-1].lower() in LEADING_WORDS and before[-1].lower() not in ARTICLES:
        lead.insert(0, before.pop())
    return " ".join(lead)


def _answer_text(output: str, cloze: str | None) -> str:
    """The model's output without what is not the answer: a negated alternative ("Ulm, not Berlin"), any
    repetition of the cloze, whole ("Einstein was born in Ulm") or its last words ("born in Ulm"), and a
    lower-case lead-in before a name ("painted by Vincent van Gogh")."""
    text = re.split(r",?\s+(?:not|rather than|instead of)\s", clean(output), maxsplit=1, flags=re.I)[0].strip()
    cloze_words = [w.lower() for w in (cloze or "").split()]
    split = text.split()
    for k in range(min(len(cloze_words), len(split) - 1), 0, -1):
        if [w.lower() for w in split[:k]] == cloze_words[-k:]:
            return " ".join(split[k:])
    preposition = "|".join(w for w in LEADING_WORDS if w not in ARTICLES)
    lead = re.match(rf"(?:[a-z][\w'’-]*\s+){{1,2}}(?:{preposition})\s+(?=[A-Z0-9])", text)
    return text[lead.end():] if lead else text
