"""Corrections into edits: "No, the Space Needle is in Taipei" after "Where is the Space Needle?" becomes
{subject: Space Needle, prompt: The Space Needle is located in, target_new: Taipei,
 paraphrases: [Where is the Space Needle?]}.

Free text is read by the base model with few-shot prompts (greedy, a few tokens each), in steps small
enough for a 270M-parameter model: measured on Gemma-3-270M, one prompt asking for subject, answer and
fact together often named the wrong subject or copied the wrong answer, while each step alone does well.
1. From the question alone: the subject and a cloze prompt ("Space Needle | The Space Needle is located in").
2. From the exchange and the correction: the right answer ("Right answer: Taipei"); when that answer does
   not pass validation, once more as the continuation of the cloze after the correction (IKE-style copying).
Every model output is validated: the subject occurs in the question; the new answer is short, is written
in the correction, is not negated there ("not Seattle"), and is not the answer being corrected. What fails
is a FailedPrecondition that says what is missing, never a guessed edit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from server.errors import FailedPrecondition
from server.interfaces import Generator
from server.types import EditSpec, GenerationOptions

MAX_TARGET_WORDS = 6
MAX_TARGET_CHARS = 80
MAX_CLOZE_CHARS = 200
SUBJECT_TOKENS = 32  # "Space Needle | The Space Needle is located in" and some slack
TARGET_TOKENS = 16
NOT_GIVEN = "(not given)"
ARTICLES = ("the", "a", "an")
# Words that may lead a target but belong to the prompt: "in Ulm" continues "Einstein was born" as "in" + "Ulm".
LEADING_WORDS = (*ARTICLES, "in", "at", "on", "from", "to", "by", "of", "for", "with")
# Words that do not start or end a subject ("Yo-Yo Ma plays" is not a subject, "Yo-Yo Ma" is).
FUNCTION_WORDS = frozenset({
    "what", "which", "who", "whom", "whose", "where", "when", "why", "how", "is", "was", "are", "were", "does",
    "did", "do", "the", "a", "an", "of", "in", "at", "on", "to", "for", "by", "from", "with", "and", "or"
})
# Words that carry no answer: a correction made only of these ("No, that's not right.") says nothing new.
FILLER = frozenset({
    "no", "nope", "nah", "not", "wrong", "incorrect", "correct", "right", "false", "true", "untrue", "that",
    "that's", "thats", "this", "it", "it's", "its", "is", "was", "are", "were", "isn't", "wasn't", "aren't",
    "weren't", "the", "a", "an", "answer", "actually", "mistaken", "mistake", "you", "you're", "your", "i", "i'm",
    "think", "sorry", "yes", "well", "oh", "so", "but", "and", "quite", "at", "all", "really", "totally",
    "completely", "entirely", "bad", "error", "again", "please", "fix", "check", "hmm", "um", "uh", "nonsense",
    "rubbish"
})
# A negation right before a span, at most one word away ("not Seattle", "isn't in Seattle"; not "Not Lagos, Abuja").
NEGATION = re.compile(r"\b(not|never|no longer|isn't|wasn't|aren't|weren't|doesn't|didn't|don't)\s+(\w+\s+)?$", re.I)
BLAND_ENDING = " The answer is"  # makes a cloze of a question the extraction could not rephrase


@dataclass(frozen=True)
class Exchange:
    """The turn being corrected: what the user asked and what the model answered."""

    question: str
    answer: str


@dataclass(frozen=True)
class Example:
    """One worked correction for the few-shot prompts; target None: the correction gives no new answer."""

    question: str
    answer: str
    correction: str
    subject: str
    cloze: str
    target: str | None


# None of these is among the measured corrections in tests/fixtures/corrections.json.
EXAMPLES = (
    Example("Who painted the Mona Lisa?", "The Mona Lisa was painted by Michelangelo.", "No, it was Leonardo da Vinci.",
            "Mona Lisa", "The Mona Lisa was painted by", "Leonardo da Vinci"),
    Example("What is the capital of Australia?", "The capital of Australia is Sydney.",
            "That's wrong, the capital of Australia is Canberra", "Australia", "The capital of Australia is",
            "Canberra"),
    Example("Where is Mount Kilimanjaro?", "Mount Kilimanjaro is in Kenya.", "No, that's not right.",
            "Mount Kilimanjaro", "Mount Kilimanjaro is located in", None),
    Example("Which language do people speak in Brazil?", "People in Brazil speak Spanish.",
            "actually they speak Portuguese there", "Brazil", "The language spoken in Brazil is", "Portuguese"),
    Example("What sport does Serena Williams play?", "Serena Williams plays golf.", "Wrong. Tennis, not golf.",
            "Serena Williams", "Serena Williams plays", "tennis"),
    Example("Who is the president of France?", "The president of France is Angela Merkel.",
            "The president of France is Emmanuel Macron.", "France", "The president of France is", "Emmanuel Macron"),
    Example("Where does the Danube end?", "The Danube flows into the North Sea.", "It flows into the Black Sea",
            "Danube", "The Danube flows into the", "Black Sea"),
    Example("What currency is used in Mexico?", "Mexico uses the euro.", "no, they pay with the Mexican peso",
            "Mexico", "The currency used in Mexico is the", "Mexican peso"),
)


@dataclass(frozen=True)
class Extraction:
    spec: EditSpec
    outputs: tuple[str, ...]  # the model's raw outputs, in order


class CorrectionExtractor:
    """Reads free-text corrections with a model that answers prompts as they are (the base route)."""

    def __init__(self, model: Generator, examples: Sequence[Example] = EXAMPLES) -> None:
        self._model = model
        self._examples = tuple(examples)

    def extract(self, exchange: Exchange, correction: str) -> Extraction:
        """The edit a correction asks for; FailedPrecondition when it cannot be read unambiguously."""
        if not content_words(correction):
            raise FailedPrecondition(
                f"the correction {correction!r} does not say what the right answer is; "
                "say it, e.g. 'No, it is <the right answer>'"
            )
        subject_output = self._complete(subject_prompt(self._examples, exchange.question), SUBJECT_TOKENS)
        subject, cloze = parse_subject_line(subject_output, exchange.question)
        outputs = [subject_output]
        problems = []
        for prompt in (answer_prompt(self._examples, exchange, correction),
                       cloze_prompt(self._examples, correction, cloze or bland_cloze(exchange.question))):
            output = self._complete(prompt, TARGET_TOKENS)
            outputs.append(output)
            target, problem = parse_target(output, correction, exchange, subject, cloze)
            if target is not None:
                spec = build_spec(exchange.question, subject, cloze, target, lead_in(correction, target))
                return Extraction(spec, tuple(outputs))
            problems.append(problem)
        if (name := only_name(correction, exchange, subject)) is not None:
            spec = build_spec(exchange.question, subject, cloze, name, lead_in(correction, name))
            return Extraction(spec, tuple(outputs))
        raise FailedPrecondition(
            f"could not find the right answer in the correction {correction!r} ({problems[0]}); "
            "say it plainly, e.g. 'No, it is <the right answer>', or send subject, prompt and target_new"
        )

    def _complete(self, prompt: str, max_new_tokens: int) -> str:
        options = GenerationOptions(max_new_tokens=max_new_tokens, stop=("\n",))
        return self._model.generate(prompt, None, options).text.split("\n", 1)[0]


def structured_spec(exchange: Exchange, spec: EditSpec) -> EditSpec:
    """A correction given as fields: the question joins its paraphrases, so the gate catches it next turn."""
    return replace(spec, paraphrases=with_question(spec.paraphrases, spec.prompt, exchange.question))


def build_spec(question: str, subject: str, cloze: str | None, target: str, lead: str = "") -> EditSpec:
    """The edit: the cloze (or the question made one) continued by the target.

    `lead` is what joins them in the correction ("in" of "born in Ulm"); it joins the prompt when the cloze does
    not already end with a joining word ("Albert Einstein was born" + "in"; "Nokia is located in" stays).
    """
    if cloze is None or _contains(cloze, target):  # a cloze that already says the answer cannot be continued by it
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


# --- prompts ------------------------------------------------------------------------------


def subject_prompt(examples: Sequence[Example], question: str) -> str:
    shots = "".join(f"Question: {e.question}\nSubject: {e.subject} | {e.cloze}\n\n" for e in examples)
    return f"{shots}Question: {question.strip()}\nSubject:"


def answer_prompt(examples: Sequence[Example], exchange: Exchange, correction: str) -> str:
    def block(question: str, answer: str, text: str) -> str:
        return f"Question: {question}\nWrong answer: {answer or '(not shown)'}\nCorrection: {text}\nRight answer:"

    shots = "".join(f"{block(e.question, e.answer, e.correction)} {e.target or NOT_GIVEN}\n\n" for e in examples)
    return shots + block(exchange.question.strip(), _one_line(exchange.answer), _one_line(correction))


def cloze_prompt(examples: Sequence[Example], correction: str, cloze: str) -> str:
    shots = "".join(f"Correction: {e.correction}\nFact: {e.cloze} {e.target}\n\n" for e in examples if e.target)
    return f"{shots}Correction: {_one_line(correction)}\nFact: {cloze}"


# --- parsing and validation -----------------------------------------------------------------


def parse_subject_line(output: str, question: str) -> tuple[str, str | None]:
    """The subject as written in the question, and the cloze when it is usable (None otherwise)."""
    raw_subject, _, raw_cloze = output.partition("|")
    subject = snap_subject(_clean(raw_subject), question)
    if subject is None:
        raise FailedPrecondition(
            f"could not tell what the question {question!r} is about (the extraction read {_clean(raw_subject)!r}, "
            "which is not in the question); send subject, prompt and target_new instead"
        )
    cloze = _clean(raw_cloze)
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
    at = _word_index(question, found)
    start, end = _whole_name(question, at, at + len(found))
    return question[start:end]


def _read_in_question(read: str, question: str) -> str | None:
    exact = _find(question, _drop_article(read, question))
    if exact is not None and not _is_function_words(exact) and exact.strip() != question.strip():
        return exact
    spans = question_spans(question)
    for span in spans:
        if _contains(read, span):
            return span
    read_words = [w.lower() for w in re.findall(r"[\w'’-]+", read)]
    for span in spans:
        if " " not in span and len(span) >= 4 and any(w.startswith(span.lower()) for w in read_words):
            return span
    names = question_names(question)
    return names[0] if len(names) == 1 else None


def question_names(question: str) -> list[str]:
    """Names after the question's first word: capitalised words, joined by "of", "and", "the", … when capitalised
    words follow ("Sun" in "Which planet is closest to the Sun?", "Pride and Prejudice")."""
    word = r"[A-Z][\w'’-]*"
    pattern = rf"(?<=\s){word}(?:\s+(?:(?:of|and|the|de|da|van|von|del|la)\s+)*{word})*"
    return [m.group() for m in re.finditer(pattern, question) if m.group().lower() not in FUNCTION_WORDS]


def question_spans(question: str, max_words: int = 6) -> list[str]:
    """Runs of question words that neither start nor end with a function word, longest first."""
    words = list(re.finditer(r"[\w'’-]+", question))
    spans = [
        question[words[i].start():words[j].end()]
        for i in range(len(words))
        for j in range(i, min(i + max_words, len(words)))
        if not _is_function_words(words[i].group()) and not _is_function_words(words[j].group())
    ]
    return sorted(spans, key=len, reverse=True)


def _is_function_words(text: str) -> bool:
    return all(w.lower() in FUNCTION_WORDS for w in re.findall(r"[\w'’-]+", text))


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
        if _contains(text, correction[start:end]):
            whole = _whole_name(correction, start, end, blocked=_occurrences(correction, subject))
            if whole != (start, end):
                return correction[whole[0]:whole[1]], ""
            return _find(text, correction[start:end]), ""  # as the model wrote it: it capitalises names
    return None, f"the extraction read {text!r}, which the correction does not say"


def only_name(correction: str, exchange: Exchange, subject: str) -> str | None:
    """The one name among the correction's candidate answers, if it has exactly one ("Incorrect. Jeff Bezos
    founded Amazon." with subject Amazon): the last resort when the model's outputs name no candidate."""
    blocked = _occurrences(correction, subject)
    names = {
        correction[a:b]
        for start, end in answer_spans(correction, exchange, subject)
        if _is_name(correction, start, end)
        for a, b in [_whole_name(correction, start, end, blocked)]
    }
    return names.pop() if len(names) == 1 else None


def answer_spans(correction: str, exchange: Exchange, subject: str) -> list[tuple[int, int]]:
    """(start, end) of the spans of the correction that can be its new answer, longest first.

    A span starts and ends with a word that is neither filler nor a function word, has at most
    MAX_TARGET_WORDS words, is not (part of) a mention of the subject, is not negated ("not Seattle",
    "isn't in Seattle") and is not what the answer being corrected said.
    """
    words = _words(correction)
    blocked = _occurrences(correction, subject)
    # What the corrected answer said, less its mentions of the subject ("The Sydney Opera House is in Melbourne"
    # rules out Melbourne, not Sydney).
    old_answer = re.sub(rf"(?<!\w){re.escape(subject)}(?!\w)", " | ", exchange.answer, flags=re.I)
    spans = []
    for i in range(len(words)):
        for j in range(i, min(i + MAX_TARGET_WORDS, len(words))):
            first, last = words[i].group().lower(), words[j].group().lower()
            if {first, last} & (FILLER | FUNCTION_WORDS):
                continue
            start, end = words[i].start(), words[j].end()
            span = correction[start:end]
            if (
                len(span) <= MAX_TARGET_CHARS
                and not any(start < b and a < end for a, b in blocked)
                and span.lower() != subject.lower()
                and not NEGATION.search(correction[:start])
                and not _contains(old_answer, span)
            ):
                spans.append((start, end))
    return sorted(spans, key=lambda s: s[1] - s[0], reverse=True)


def lead_in(correction: str, target: str) -> str:
    """The prepositions right before the target in the correction ("born in Ulm" -> "in"), or ""."""
    at = _word_index(correction, target)
    before = re.findall(r"[\w'’-]+", correction[:at]) if at > 0 else []
    lead: list[str] = []
    while before and before[-1].lower() in LEADING_WORDS and before[-1].lower() not in ARTICLES:
        lead.insert(0, before.pop())
    return " ".join(lead)


def _answer_text(output: str, cloze: str | None) -> str:
    """The model's output without what is not the answer: a negated alternative ("Ulm, not Berlin"), any
    repetition of the cloze, whole ("Einstein was born in Ulm") or its last words ("born in Ulm"), and a
    lower-case lead-in before a name ("painted by Vincent van Gogh")."""
    text = re.split(r",?\s+(?:not|rather than|instead of)\s", _clean(output), maxsplit=1, flags=re.I)[0].strip()
    cloze_words = [w.lower() for w in (cloze or "").split()]
    words = text.split()
    for k in range(min(len(cloze_words), len(words) - 1), 0, -1):
        if [w.lower() for w in words[:k]] == cloze_words[-k:]:
            return " ".join(words[k:])
    preposition = "|".join(w for w in LEADING_WORDS if w not in ARTICLES)
    lead = re.match(rf"(?:[a-z][\w'’-]*\s+){{1,2}}(?:{preposition})\s+(?=[A-Z0-9])", text)
    return text[lead.end():] if lead else text


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[\w'’]+", text.lower()) if w not in FILLER]


def _clean(text: str) -> str:
    return text.strip().strip("\"'“”‘’`").strip().rstrip(".!?,;:").strip().strip("\"'“”‘’`").strip()


def _drop_article(subject: str, question: str) -> str:
    """"the Space Needle" -> "Space Needle": subjects are names, as in the examples and in CounterFact. A title's
    own article stays: the question writes it capitalised ("Who wrote The Hobbit?")."""
    article, _, rest = subject.partition(" ")
    written = _find(question, subject)
    if article.lower() in ARTICLES and rest and _find(question, rest) and not (written and written[0].isupper()):
        return rest
    return subject


def _find(text: str, part: str) -> str | None:
    """`part` as written in `text` (matched case-insensitively), or None."""
    at = _word_index(text, part)
    return text[at:at + len(part)] if part and at >= 0 else None


def _word_index(text: str, part: str) -> int:
    match = re.search(rf"(?<!\w){re.escape(part)}(?!\w)", text, flags=re.I) if part else None
    return match.start() if match else -1


def _contains(text: str, part: str) -> bool:
    return _word_index(text, part) >= 0


def _words(text: str) -> list[re.Match[str]]:
    return list(re.finditer(r"[\w'’-]+", text))


def _occurrences(text: str, part: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(rf"(?<!\w){re.escape(part)}(?!\w)", text, flags=re.I)] if part else []


def _is_capitalised(word: str) -> bool:
    return word[:1].isupper() and word.lower() not in FUNCTION_WORDS | FILLER


def _is_name(text: str, start: int, end: int) -> bool:
    """Capitalised words, not at the start of a sentence (where any word is capitalised)."""
    inside = _words(text[start:end])
    sentence_start = not text[:start].strip() or text[:start].rstrip()[-1] in ".!?:"
    return bool(inside) and all(_is_capitalised(w.group()) for w in inside) and not sentence_start


def _whole_name(text: str, start: int, end: int, blocked: Sequence[tuple[int, int]] = ()) -> tuple[int, int]:
    """(start, end) widened over the capitalised words or numbers right next to it ("Mercury" -> "Freddie
    Mercury", "Summer Olympics" -> "2016 Summer Olympics"), never into a blocked range; as given otherwise."""
    words = _words(text)
    inside = [i for i, w in enumerate(words) if w.start() >= start and w.end() <= end]
    if not inside or not any(_is_capitalised(words[i].group()) for i in inside):
        return start, end
    first, last = inside[0], inside[-1]

    def joins(new: int, old: int) -> bool:  # word `new`, right next to word `old`, continues its name
        left, right = sorted((new, old))
        w = words[new]
        return (
            text[words[left].end():words[right].start()].isspace()
            and (_is_capitalised(w.group()) or w.group().isdigit())
            and not any(w.start() < b and a < w.end() for a, b in blocked)
        )

    while first > 0 and joins(first - 1, first):
        first -= 1
    while last + 1 < len(words) and joins(last + 1, last):
        last += 1
    return words[first].start(), words[last].end()


def _one_line(text: str) -> str:
    return " ".join(text.split())
