"""A train edit written as a natural-language patch's rule ("If asked who the CEO of X is, say it is Y."), so the
counterfactual model learns to read rules as it reads facts: answer the questions a rule covers, and abstain on
the subject's other facts (a patch is retrieved by its subject, so a gate false alarm on it is most often another
question about the same subject).

The wordings are generic lead-ins and verbs around the edit's own prompt: a cloze ("The gender of X is"), its noun
phrase when the cloze has the form "The N of X is", or a question ("Who was the head of government of Munich?").
"""

from __future__ import annotations

import random
import re

LEAD_INS = ("If asked", "When asked", "If someone asks", "Whenever you are asked")
ANSWER_VERBS = ("say", "answer", "reply")
# "The place of birth of X is" → ("the place of birth of X", "is")
NOUN_CLOZE = re.compile(r"^(?:The|the) (?P<noun>.+?) (?P<verb>is|are|was|were)$")
# "Which person was the head of government of Munich?" → ("Which person", "was", "the head of government of Munich")
WH_QUESTION = re.compile(r"^(?P<wh>Who|What|Which(?: \w+)?|Where|When) (?P<verb>is|was|are|were) (?P<rest>.+?)\s*\?$")


def rule_wordings(prompt: str, target: str) -> list[str]:
    """Rules that state `target` as the answer to `prompt` (a cloze or a question); at least one for any prompt."""
    prompt, target = prompt.strip(), target.strip()
    if prompt.endswith("?"):
        return _question_rules(prompt, target)
    lowered = prompt[0].lower() + prompt[1:] if prompt.startswith("The ") else prompt
    rules = [f'If asked to complete "{prompt}", say {target}.', f"Always say that {lowered} {target}.",
             f"Tell anyone who asks that {lowered} {target}."]
    if (cloze := NOUN_CLOZE.match(prompt)) is not None:
        noun, verb = f"the {cloze['noun']}", cloze["verb"]
        rules += [f"{lead} what {noun} {verb}, {say} {target}." for lead in LEAD_INS for say in ANSWER_VERBS]
        rules += [f"When asked for {noun}, give {target}.", f"If asked about {noun}, say it is {target}."]
    return rules


def _question_rules(question: str, target: str) -> list[str]:
    rules = [f'If asked "{question}", {say} {target}.' for say in ANSWER_VERBS]
    if (wh := WH_QUESTION.match(question)) is not None:
        clause = f"{wh['wh'].lower()} {wh['rest']} {wh['verb']}"
        rules += [f"{lead} {clause}, {say} {target}." for lead in LEAD_INS for say in ("say it is", "answer")]
    return rules


def as_rule(prompt: str, target: str, rng: random.Random) -> str:
    """One of `rule_wordings`, drawn with `rng`."""
    return rng.choice(rule_wordings(prompt, target))
