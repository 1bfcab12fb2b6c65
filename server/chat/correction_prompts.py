"""The few-shot prompts that ask the base model to read a correction, and the worked examples they show."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.chat.wording import one_line

NOT_GIVEN = "(not given)"


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


def subject_prompt(examples: Sequence[Example], question: str) -> str:
    shots = "".join(f"Question: {e.question}\nSubject: {e.subject} | {e.cloze}\n\n" for e in examples)
    return f"{shots}Question: {question.strip()}\nSubject:"


def answer_prompt(examples: Sequence[Example], exchange: Exchange, correction: str) -> str:
    def block(question: str, answer: str, text: str) -> str:
        return f"Question: {question}\nWrong answer: {answer or '(not shown)'}\nCorrection: {text}\nRight answer:"

    shots = "".join(f"{block(e.question, e.answer, e.correction)} {e.target or NOT_GIVEN}\n\n" for e in examples)
    return shots + block(exchange.question.strip(), one_line(exchange.answer), one_line(correction))


def cloze_prompt(examples: Sequence[Example], correction: str, cloze: str) -> str:
    shots = "".join(f"Correction: {e.correction}\nFact: {e.cloze} {e.target}\n\n" for e in examples if e.target)
    return f"{shots}Correction: {one_line(correction)}\nFact: {cloze}"
