"""Other wordings of an edit's question, mined from a training file, for the value optimisation.

ROME's δ is optimised on the edited prompt's wording, and a paraphrase that asks through other words
("Toko Yasuda is incredible at" for "Toko Yasuda, the") mostly does not turn it into the new answer
(docs/BENCHMARKS.md, "Why paraphrases fail"). A CounterFact training record pairs a prompt with a
rephrasing of the same relation; with the subject cut out, these are templates ("{}, the" ↔
"{} is incredible at"). An edit whose prompt has a known template is also optimised on the template's
most frequent partners, filled with its subject. Prompts with an unknown template get no others.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SLOT = "{}"
# A rephrasing may open with an unrelated sentence ("A Marañón Week is annually held since 1990. Galata is in").
_SENTENCE_END = re.compile(r"[.?!] ")


def template(prompt: str, subject: str) -> str | None:
    """The prompt's sentence that names the subject, with the subject as "{}"; None without the subject."""
    start = prompt.rfind(subject) if subject else -1
    if start < 0:
        return None
    head = prompt[:start]
    ends = list(_SENTENCE_END.finditer(head))
    if ends:
        head = head[ends[-1].end():]
    return head + SLOT + prompt[start + len(subject):]


@dataclass(frozen=True)
class Wordings:
    partners: Mapping[str, Counter[str]] = field(default_factory=dict)  # template → its partners and their counts

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, object]]) -> Wordings:
        """Pairs of each record's prompt and rephrase_prompt templates (EasyEdit flat CounterFact)."""
        partners: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for record in records:
            subject = str(record.get("subject", ""))
            a = template(str(record.get("prompt", "")), subject)
            b = template(str(record.get("rephrase_prompt", "")), subject)
            if a and b and a != b:
                partners[a][b] += 1
                partners[b][a] += 1
        return cls(dict(partners))

    @classmethod
    def load(cls, path: Path) -> Wordings:
        return cls.from_records(json.loads(path.read_text()))

    def others(self, prompt: str, subject: str, n: int) -> tuple[str, ...]:
        """Up to n other wordings of the prompt's question about `subject`, the most frequent first."""
        known = template(prompt, subject)
        if n <= 0 or known is None or known not in self.partners:
            return ()
        return tuple(t.replace(SLOT, subject) for t, _ in self.partners[known].most_common(n))
