"""Word-level heuristics over English text: words and their positions, names, function words and filler.

The correction extractor validates the model's outputs with these; they know nothing of edits or models.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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
_WORD = re.compile(r"[\w'’-]+")  # hyphens and apostrophes inside: "Yo-Yo", "it's"


def words(text: str) -> list[re.Match[str]]:
    """The words of `text` with their positions."""
    return list(_WORD.finditer(text))


def word_texts(text: str) -> list[str]:
    return [m.group() for m in words(text)]


def content_words(text: str) -> list[str]:
    """The lower-cased words that are not filler; split at hyphens too ("not-right" is two fillers)."""
    return [w for w in re.findall(r"[\w'’]+", text.lower()) if w not in FILLER]


def is_function_words(text: str) -> bool:
    return all(w.lower() in FUNCTION_WORDS for w in word_texts(text))


def question_names(question: str) -> list[str]:
    """Names after the question's first word: capitalised words, joined by "of", "and", "the", … when capitalised
    words follow ("Sun" in "Which planet is closest to the Sun?", "Pride and Prejudice")."""
    word = r"[A-Z][\w'’-]*"
    pattern = rf"(?<=\s){word}(?:\s+(?:(?:of|and|the|de|da|van|von|del|la)\s+)*{word})*"
    return [m.group() for m in re.finditer(pattern, question) if m.group().lower() not in FUNCTION_WORDS]


def question_spans(question: str, max_words: int = 6) -> list[str]:
    """Runs of question words that neither start nor end with a function word, longest first."""
    found = words(question)
    spans = [
        question[found[i].start():found[j].end()]
        for i in range(len(found))
        for j in range(i, min(i + max_words, len(found)))
        if not is_function_words(found[i].group()) and not is_function_words(found[j].group())
    ]
    return sorted(spans, key=len, reverse=True)


def clean(text: str) -> str:
    """Without surrounding quotes and sentence punctuation."""
    return text.strip().strip("\"'“”‘’`").strip().rstrip(".!?,;:").strip().strip("\"'“”‘’`").strip()


def one_line(text: str) -> str:
    return " ".join(text.split())


def drop_article(subject: str, question: str) -> str:
    """"the Space Needle" -> "Space Needle": subjects are names, as in the examples and in CounterFact. A title's
    own article stays: the question writes it capitalised ("Who wrote The Hobbit?")."""
    article, _, rest = subject.partition(" ")
    written = find(question, subject)
    if article.lower() in ARTICLES and rest and find(question, rest) and not (written and written[0].isupper()):
        return rest
    return subject


def find(text: str, part: str) -> str | None:
    """`part` as written in `text` (matched case-insensitively), or None."""
    at = word_index(text, part)
    return text[at:at + len(part)] if part and at >= 0 else None


def word_index(text: str, part: str) -> int:
    """Where `part` first occurs in `text` as whole words, case-insensitively; -1 when it does not."""
    match = re.search(rf"(?<!\w){re.escape(part)}(?!\w)", text, flags=re.I) if part else None
    return match.start() if match else -1


def contains(text: str, part: str) -> bool:
    return word_index(text, part) >= 0


def occurrences(text: str, part: str) -> list[tuple[int, int]]:
    """(start, end) of every whole-word occurrence of `part` in `text`, case-insensitively."""
    return [m.span() for m in re.finditer(rf"(?<!\w){re.escape(part)}(?!\w)", text, flags=re.I)] if part else []


def is_capitalised(word: str) -> bool:
    return word[:1].isupper() and word.lower() not in FUNCTION_WORDS | FILLER


def is_name(text: str, start: int, end: int) -> bool:
    """Capitalised words, not at the start of a sentence (where any word is capitalised)."""
    inside = words(text[start:end])
    sentence_start = not text[:start].strip() or text[:start].rstrip()[-1] in ".!?:"
    return bool(inside) and all(is_capitalised(w.group()) for w in inside) and not sentence_start


def whole_name(text: str, start: int, end: int, blocked: Sequence[tuple[int, int]] = ()) -> tuple[int, int]:
    """(start, end) widened over the capitalised words or numbers right next to it ("Mercury" -> "Freddie
    Mercury", "Summer Olympics" -> "2016 Summer Olympics"), never into a blocked range; as given otherwise."""
    found = words(text)
    inside = [i for i, w in enumerate(found) if w.start() >= start and w.end() <= end]
    if not inside or not any(is_capitalised(found[i].group()) for i in inside):
        return start, end
    first, last = inside[0], inside[-1]

    def joins(new: int, old: int) -> bool:  # word `new`, right next to word `old`, continues its name
        left, right = sorted((new, old))
        w = found[new]
        return (
            text[found[left].end():found[right].start()].isspace()
            and (is_capitalised(w.group()) or w.group().isdigit())
            and not any(w.start() < b and a < w.end() for a, b in blocked)
        )

    while first > 0 and joins(first - 1, first):
        first -= 1
    while last + 1 < len(found) and joins(last + 1, last):
        last += 1
    return found[first].start(), found[last].end()
