"""Multi-hop questions answered from the edits (issue 24 item 3): a question is split into single-hop steps, and each
step is answered by an edit in memory when one answers it, else by the base model; each answer fills the later steps
that refer to it (MeLLo's loop, Zhong et al. 2023, with the plan written up front).

The plan is a list of sub-questions in which "#k" stands for the answer of step k ("The name of the capital city of
#1 is"), so an answer reaches the next step by substitution, exactly, rather than by a model copying it. Who writes
the plan is a `Planner` (the served model from few-shot demonstrations: `FewShotPlanner`).

An edit answers a step when the gate sends the step in scope of it and the counterfactual model does not abstain
(`Router.decide`, the same decision a plain query gets); the step's answer is then the edit's `target_new` itself,
not a model's rendering of it, so a chain of edits is followed exactly. When the decision reads further edits
(`Decision.related`: a step that is itself several hops, "the head of state of the country X is a citizen of", after
edits of X's country and of that country's head of state), the route's model answers from all of them: the first
edit's object would be the first hop's answer, not the step's. Its answer picks the fact whose object it names, and
the step takes that object exactly (`picked_object`); an answer that names none takes the answering edit's own.

A step caught by an edit that states no object is answered as a plain query would be (`Router.generate`): a rule
(patch) by its route, an erased fact by the refusal, which ends the chain (the erased fact must not be reached through
a later step either). A step no edit catches is answered by the base model, through the namespace's regex patches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from server.errors import Cancelled, InvalidArgument
from server.generators.decoding import CausalLM
from server.interfaces import StopCheck
from server.router import STATED_KINDS, Router, refuses
from server.types import Decision, Edit, GenerationOptions, Query, Route, name_key

# The planner's demonstrations, written from KnowEdit train records (scripts/eval_multihop.py demonstrations).
DEFAULT_DEMONSTRATIONS = Path(__file__).resolve().parents[1] / "artifacts" / "multihop" / "demonstrations.json"
STEP_REF = re.compile(r"#(\d+)")  # "#1": the answer of step 1


@dataclass(frozen=True)
class Hop:
    """One answered step of a chain."""

    question: str  # the sub-question as asked, earlier answers substituted
    answer: str
    route: Route  # BASE when the base model answered, else the route that answered from `edit`
    edit: Edit | None  # the edit that answered, None for the base model
    related: tuple[Edit, ...] = ()  # further edits the answer read after `edit` (Decision.related)

    @property
    def final(self) -> bool:
        """A refusal (an erased fact): nothing to carry on with."""
        return refuses(self.route, self.edit)


@dataclass(frozen=True)
class ChainAnswer:
    """A multi-hop answer: the last step's answer, and every step with where its answer came from."""

    question: str
    plan: tuple[str, ...]
    hops: tuple[Hop, ...]

    @property
    def answer(self) -> str:
        return self.hops[-1].answer if self.hops else ""

    @property
    def edits_used(self) -> tuple[str, ...]:
        """The ids of the edits that answered steps (each step's edit, then the related ones it read), in the order
        the chain used them."""
        used = (e.id for h in self.hops if h.edit is not None for e in (h.edit, *h.related))
        return tuple(dict.fromkeys(used))  # an edit read again at a later step counts once, where first used


class Planner(Protocol):
    def plan(self, question: str, should_stop: StopCheck | None = None) -> list[str]:
        """The question's single-hop sub-questions in order; "#k" in a step stands for the answer of step k."""
        ...


class StepAnswerer(Protocol):
    def answer(self, namespace: str, question: str, should_stop: StopCheck | None = None) -> Hop: ...


@dataclass(frozen=True)
class GivenPlan:
    """The caller's own steps (from a decomposer of its own), checked with `check_plan`."""

    steps: tuple[str, ...]

    def plan(self, question: str, should_stop: StopCheck | None = None) -> list[str]:
        return list(self.steps)


def references(step: str) -> set[int]:
    """The steps whose answers `step` refers to ("#k")."""
    return {int(k) for k in STEP_REF.findall(step)}


def check_plan(steps: Sequence[str], max_hops: int) -> None:
    """A caller's plan: at most `max_hops` steps, each "#k" naming an earlier step, so every reference is filled
    before its step is asked. (A model's plan must also chain each step to the one before: `parse_steps`.)"""
    if len(steps) > max_hops:
        raise InvalidArgument(f"steps has {len(steps)} entries; the limit is {max_hops} hops")
    for i, step in enumerate(steps):
        for k in sorted(references(step)):
            if not 1 <= k <= i:
                earlier = f"#1 to #{i}" if i else "none: the first step names its subject itself"
                raise InvalidArgument(f"steps[{i}] refers to #{k}, which is not an earlier step's answer "
                                      f"(it may refer to {earlier})")


def substitute(step: str, answers: Sequence[str]) -> str:
    """The step with each "#k" replaced by the answer of step k (1-based); a reference to a step not yet answered
    (or to none) is left as written."""
    def fill(match: re.Match[str]) -> str:
        k = int(match.group(1))
        return answers[k - 1] if 1 <= k <= len(answers) else match.group(0)
    return STEP_REF.sub(fill, step)


def base_prompt(step: str) -> str:
    """How the base model is asked a step: a cloze as it is, a question in a Q/A frame (a base model continues a bare
    question with more text, not its answer)."""
    step = step.strip()
    return f"Q: {step}\nA:" if step.endswith("?") else step


def picked_object(text: str, decision: Decision) -> str | None:
    """For an answer from an edit found by its subject that read several facts (`Decision.related`): the new object,
    exactly as stored, of the fact the answer names (its first line begins with the object's whole words; the longest
    such, so "St. Louis Cardinals" over "St. Louis"); the answering edit's own when it names none (where an edit
    answers a step, a model's free text is not followed). None when the answer read one fact only, or its edit was
    found by the object the step names (the answer is not that edit's object)."""
    edit = decision.edit
    if not decision.related or edit is None or edit.kind not in STATED_KINDS or decision.by_object:
        return None
    said = name_key(text.strip().split("\n", 1)[0])
    named = [f.target_new.strip() for f in (edit, *decision.related)
             if f.kind in STATED_KINDS and _begins_with(said, name_key(f.target_new))]
    return max(named, key=len, default=edit.target_new.strip())


def _begins_with(text: str, name: str) -> bool:
    """`text` begins with `name`'s whole words ("croatia" begins "croatia, a country", not "croatian")."""
    return bool(name) and text.startswith(name) and (len(text) == len(name) or not text[len(name)].isalnum())


def short_answer(text: str) -> str:
    """A base model's continuation cut to its answer: the first line, up to a sentence end, without the stop."""
    line = text.strip().split("\n", 1)[0].strip()
    line = re.split(r"(?<=[a-z\)])\.(?:\s|$)", line, maxsplit=1)[0]  # "Croatia. It is" → "Croatia"; keeps "U.S."
    return line.strip().rstrip(".,;:").strip()


@dataclass(frozen=True)
class RouterSteps:
    """Answers a step from the edit the router finds for it (exactly its target_new; its subject, exactly, for the fact
    asked backwards: route reverse), else as the router answers a query (the base model, a rule's route, an erased
    fact's refusal, an edit found by the object the step names where the reverse route is off, whose answer is not its
    target), cut to a short answer; an edit read with related ones, by the object of the fact the answer names
    (`picked_object`)."""

    router: Router
    options: GenerationOptions  # a short answer: a few tokens, greedy

    def answer(self, namespace: str, question: str, should_stop: StopCheck | None = None) -> Hop:
        decision = self.router.decide(Query(namespace, question))
        edit = decision.edit
        if edit is not None and decision.route is not Route.BASE and edit.kind in STATED_KINDS:
            if decision.route is Route.REVERSE:  # the fact asked backwards: its subject, exactly
                return Hop(question, edit.subject.strip(), decision.route, edit)
            if not decision.by_object and not decision.related:
                return Hop(question, edit.target_new.strip(), decision.route, edit)
        # The base model reads a question in a Q/A frame; an in-scope route reads the step as a query.
        query = Query(namespace, base_prompt(question) if decision.route is Route.BASE else question)
        generation = self.router.generate(query, decision, self.options, should_stop=should_stop)
        answered = self.router.acted_decision(query, decision, generation.acted)  # state beside the weights acted
        answer = picked_object(generation.text, answered) or short_answer(generation.text)
        return Hop(question, answer, answered.route, answered.edit, answered.related)


@dataclass(frozen=True)
class ChainFollower:
    planner: Planner
    steps: StepAnswerer
    max_hops: int = 4  # MQuAKE's longest chains; a longer plan is cut here
    max_step_chars: int = 8000  # a step once earlier answers are filled in (an edit's answer may be long)

    def __post_init__(self) -> None:
        if self.max_hops < 1:
            raise ValueError(f"max_hops must be at least 1, got {self.max_hops}")

    def follow(self, namespace: str, question: str, should_stop: StopCheck | None = None) -> ChainAnswer:
        # A question the planner cannot split is asked whole, as a plain query would be.
        plan = tuple(self.planner.plan(question, should_stop)[: self.max_hops]) or (question,)
        hops: list[Hop] = []
        for i, step in enumerate(plan):
            if should_stop is not None and should_stop():
                raise Cancelled(f"the caller went away or its deadline passed after {i} of {len(plan)} steps")
            asked = substitute(step, [h.answer for h in hops])
            if len(asked) > self.max_step_chars:
                raise InvalidArgument(f"steps[{i}] has {len(asked)} characters once earlier answers are filled in; "
                                      f"the limit is {self.max_step_chars}")
            hop = self.steps.answer(namespace, asked, should_stop)
            hops.append(hop)
            if not hop.answer or hop.final:  # nothing to carry on with
                break
        return ChainAnswer(question, plan, tuple(hops))


@dataclass(frozen=True)
class Demonstration:
    """A worked decomposition shown to the planner model."""

    question: str
    steps: tuple[str, ...]

    def render(self) -> str:
        lines = [f"Question: {self.question}"] + [f"Step {i}: {s}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class FewShotPlanner:
    """The served model writes the plan, one "Step k:" line after another, after a few demonstrations."""

    lm: CausalLM
    demonstrations: tuple[Demonstration, ...]
    max_steps: int = 4
    max_step_tokens: int = 40

    def prompt(self, question: str) -> str:
        shots = "\n".join(d.render() for d in self.demonstrations)
        return f"{shots}\nQuestion: {question.strip()}\nStep 1:"

    def plan(self, question: str, should_stop: StopCheck | None = None) -> list[str]:
        options = GenerationOptions(max_new_tokens=self.max_steps * self.max_step_tokens, stop=("\n\n", "Question:"))
        text = "Step 1:" + self.lm.decode(self.prompt(question), options, should_stop=should_stop).text
        return parse_steps(text, self.max_steps)


def save_demonstrations(path: Path, demonstrations: Sequence[Demonstration]) -> None:
    path.write_text(json.dumps([asdict(d) for d in demonstrations], indent=1, ensure_ascii=False) + "\n")


def load_demonstrations(path: Path) -> tuple[Demonstration, ...]:
    """A file `save_demonstrations` wrote: a JSON list of {"question", "steps"}."""
    records = json.loads(path.read_text())
    return tuple(Demonstration(str(r["question"]), tuple(str(s) for s in r["steps"])) for r in records)


def parse_steps(text: str, max_steps: int) -> list[str]:
    """The consecutive "Step k: ..." lines from step 1 on (k in order), at most `max_steps`, that make a chain: each
    step after the first refers to the one before it ("#k-1"), and none to a step not yet answered or repeats an
    earlier one. The first line that breaks this ends the plan (a small model often writes step 1 again, or a "#1"
    into step 1)."""
    steps: list[str] = []
    for line in text.strip().split("\n"):
        match = re.fullmatch(r"Step (\d+):\s*(.+)", line.strip())
        if match is None or int(match.group(1)) != len(steps) + 1 or len(steps) == max_steps:
            break
        step = match.group(2).strip()
        refs = references(step)
        if step in steps or any(not 1 <= k <= len(steps) for k in refs) or (steps and len(steps) not in refs):
            break
        steps.append(step)
    return steps


def knowedit_demonstrations(records: Sequence[dict], k: int, max_chars: int = 100) -> tuple[Demonstration, ...]:
    """Up to `k` two-step plans from KnowEdit records (train files only) whose `Reasoning` portability prompt asks a
    fact of the edit's object through the edit's own phrase: the edit's prompt is step 1, and the portability prompt
    with that phrase replaced by "#1" is step 2 ("The name of the capital city of #1 is"). One per step-2 template,
    in file order, so the shots show different relations; questions over `max_chars` (paper titles as subjects) are
    passed over, as they teach copying more than splitting."""
    demonstrations: list[Demonstration] = []
    seen: set[str] = set()
    for record in records:
        subject, first = str(record.get("subject", "")), str(record.get("prompt", "")).strip()
        phrase = _noun_phrase(first)
        if not subject or phrase is None or subject not in phrase:
            continue
        for item in (record.get("portability") or {}).get("Reasoning") or []:
            question = str(item.get("prompt", "")).strip() if isinstance(item, dict) else ""
            # "the country which X is associated with" is also written "the country X is associated with".
            found = next((p for p in (phrase, phrase.replace(" which ", " ", 1)) if p in question), None)
            if found is None or len(question) > max_chars:
                continue
            second = question.replace(found, "#1", 1)
            if subject in second or second in seen:
                continue
            seen.add(second)
            demonstrations.append(Demonstration(question, (first, second)))
            break
        if len(demonstrations) == k:
            break
    return tuple(demonstrations)


def as_question(demonstration: Demonstration) -> Demonstration:
    """The demonstration with its question asked as users ask ("What is the name of the mother of X?" for "The name
    of the mother of X is"), the steps kept as clozes (the form the base model answers better)."""
    match = re.fullmatch(r"The (.+) is", demonstration.question)
    if match is None:
        return demonstration
    return Demonstration(f"What is the {match.group(1)}?", demonstration.steps)


def _noun_phrase(cloze: str) -> str | None:
    """KnowEdit's "The name of the mother of X is" / "The place of death of X is" as the noun phrase it asks
    for ("the mother of X", "the place of death of X"); None for another form."""
    match = re.fullmatch(r"The (?:name of )?(.+) is", cloze)
    if match is None:
        return None
    rest = match.group(1)
    return rest if rest.startswith("the ") else f"the {rest}"
