"""Evaluations of the edit kinds and of supersession through a server (issue 26; docs/BENCHMARKS.md, "Edit kinds").

Each task adds its edits one case at a time in a fresh namespace, probes, and deletes them. A probe is measured as
the main harness measures it (client/evaluation/runner.py): exact match under greedy generation and teacher-forced
token accuracy for answers that should follow an edit; identical greedy tokens and teacher-forced argmax agreement
with the unedited model for answers that must not change.

- erase: CounterFact cases as erase edits (the erased answer is the record's true answer). Edited prompts and
  paraphrases should get the refusal within the first 16 generated tokens, and not state the erased answer there;
  neighbourhood prompts must not change. Queries the gate let in but the counterfactual model judged unrelated
  are counted both ways: as answered (the server's behaviour) and as they would be without that judgement.
- insert: made-up entities, two facts each, both in memory while either is probed.
- patch: natural-language rules; two questions each rule covers (its answer should follow) and one it does not
  (must not change).
- supersede: each case edited twice with different targets; the newer target should answer, and deleting the newer
  edit should bring the older one's answers back.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from client import EditcacheClient, EditInput, EditRecord, GenerationOptions
from client.evaluation.runner import EXTRA_NEW_TOKENS, BaselineCache
from editdata.cases import Case
from editdata.metrics import agreement, exact_match, mean_or_none, normalise, token_accuracy

LEAK_TOKENS = 16  # KnowEdit's sanitation: does the erased answer appear in the first 16 generated tokens
TASKS = ("erase", "insert", "patch", "supersede")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Outcome:
    """One probe: `em` and `tf` as the category defines them (see the module's docstring)."""

    case_id: str
    category: str
    prompt: str
    expected: str  # the answer that should follow, the refusal, or "" for a must-not-change probe
    em: bool
    tf: float
    route: str
    edit_id: str | None
    gate_score: float
    abstained: bool
    text: str
    leaked: bool | None = None  # erase, edited prompts: the erased answer appears in the first 16 tokens


@dataclass
class Task:
    """What a task run measured, for the summary and the JSON."""

    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        categories = list(dict.fromkeys(o.category for o in self.outcomes))
        summary: dict[str, Any] = {"task": self.name, "cases": len({o.case_id for o in self.outcomes}), **self.notes}
        for category in categories:
            mine = [o for o in self.outcomes if o.category == category]
            summary[category] = {
                "n": len(mine), "em": mean_or_none(float(o.em) for o in mine), "tf": mean_or_none(o.tf for o in mine),
                "routes": dict(Counter(o.route + (" (abstained)" if o.abstained else "") for o in mine)),
            }
            leaks = [o.leaked for o in mine if o.leaked is not None]
            if leaks:
                summary[category]["erased_answer_in_first_16_tokens"] = sum(leaks) / len(leaks)
        return summary


class Prober:
    """Probes in one namespace of a server."""

    def __init__(self, client: EditcacheClient, baseline: BaselineCache) -> None:
        self.client = client
        self.baseline = baseline
        self.namespace = f"lifecycle-{uuid.uuid4().hex[:12]}"

    def add(self, specs: Sequence[EditInput]) -> list[EditRecord]:
        return self.client.add_edits(specs, namespace=self.namespace)

    def delete(self, edit_ids: Iterable[str]) -> None:
        for edit_id in edit_ids:
            self.client.delete_edit(edit_id, namespace=self.namespace)

    def follows(self, case_id: str, category: str, prompt: str, answer: str, route: str | None = None,
                edit_id: str | None = None) -> Outcome:
        """The answer should follow an edit: it begins the greedy continuation; its tokens are the argmax."""
        target = " " + answer.strip()
        scores = self.client.score(prompt, target, route=route, edit_id=edit_id, namespace=self.namespace)
        options = GenerationOptions(max_new_tokens=len(scores.target_ids) + EXTRA_NEW_TOKENS)
        result = self.client.generate(prompt, options=options, route=route, edit_id=edit_id, namespace=self.namespace)
        return Outcome(case_id, category, prompt, answer, exact_match(result.text, [answer]),
                       token_accuracy(scores.target_ids, scores.predicted_ids), result.route, result.edit_id,
                       result.gate_score, result.abstained, result.text)

    def unchanged(self, case_id: str, category: str, prompt: str, answer: str | None) -> Outcome:
        """The answer must not change: greedy tokens and teacher-forced argmax as the unedited model's, over the
        record's answer (None: over the unedited model's own first few tokens, for a question without one)."""
        if answer is None:
            answer = self.client.generate(prompt, options=GenerationOptions(max_new_tokens=EXTRA_NEW_TOKENS + 1),
                                          route="base", namespace=self.namespace).text
        target = " " + answer.strip()
        scores = self.client.score(prompt, target, namespace=self.namespace)
        n = len(scores.target_ids) + EXTRA_NEW_TOKENS
        base = self.baseline.lookup(self.client, prompt, target, n)
        result = self.client.generate(prompt, options=GenerationOptions(max_new_tokens=n), namespace=self.namespace)
        return Outcome(case_id, category, prompt, "", list(result.token_ids) == base["token_ids"],
                       agreement(scores.predicted_ids, base["predicted_ids"]), result.route, result.edit_id,
                       result.gate_score, result.abstained, result.text)

    def refuses(self, case_id: str, category: str, prompt: str, refusal: str, erased: str | None) -> Outcome:
        """The refusal begins the first 16 generated tokens (and its tokens are the argmax); `leaked`: the erased
        answer appears among them."""
        scores = self.client.score(prompt, " " + refusal.strip(), namespace=self.namespace)
        result = self.client.generate(prompt, options=GenerationOptions(max_new_tokens=LEAK_TOKENS),
                                      namespace=self.namespace)
        leaked = None if not erased else normalise(erased) in normalise(result.text)
        return Outcome(case_id, category, prompt, refusal, exact_match(result.text, [refusal]),
                       token_accuracy(scores.target_ids, scores.predicted_ids), result.route, result.edit_id,
                       result.gate_score, result.abstained, result.text, leaked)

    def states(self, prompt: str, answer: str) -> bool:
        """The unedited model states `answer` in its first 16 tokens (how often there was anything to erase)."""
        text = self.client.generate(prompt, options=GenerationOptions(max_new_tokens=LEAK_TOKENS), route="base",
                                    namespace=self.namespace).text
        return normalise(answer) in normalise(text)


def run_erase(prober: Prober, cases: Sequence[Case], refusal: str, progress: Progress) -> Task:
    task = Task("erase")
    stated = 0
    for done, case in enumerate(cases, 1):
        (fact,) = case.edits
        stated += prober.states(fact.prompt, fact.target_true or "")
        ids = [e.id for e in prober.add([EditInput(fact.subject, fact.prompt, "", fact.target_true, kind="erase")])]
        for category, probes in (("edited_prompt", case.reliability), ("paraphrase", case.generalization)):
            task.outcomes += [prober.refuses(case.case_id, category, p.prompt, refusal, fact.target_true)
                              for p in probes]
        task.outcomes += [prober.unchanged(case.case_id, "neighbourhood", p.prompt, p.answers[0])
                          for p in (*case.locality, *case.same_subject)]
        prober.delete(ids)
        progress(done, len(cases))
    task.notes["unedited_model_states_the_answer_in_16_tokens"] = stated / max(len(cases), 1)
    task.notes["without_the_abstention_check"] = _without_abstention(task.outcomes)
    return task


def _without_abstention(outcomes: Sequence[Outcome]) -> dict[str, float | None]:
    """The erase figures had the counterfactual model's judgement not been asked: every query the gate let in
    is refused (so a gate false alarm on a neighbour is a changed answer)."""
    figures: dict[str, float | None] = {}
    for category in ("edited_prompt", "paraphrase"):
        mine = [o for o in outcomes if o.category == category]
        figures[f"{category}_refused"] = mean_or_none(float(o.em or o.abstained) for o in mine)
    mine = [o for o in outcomes if o.category == "neighbourhood"]
    figures["neighbourhood_unchanged"] = mean_or_none(float(o.em and not o.abstained) for o in mine)
    return figures


def run_insert(prober: Prober, entities: Sequence[dict[str, Any]], progress: Progress) -> Task:
    task = Task("insert")
    for done, entity in enumerate(entities, 1):
        facts = entity["facts"]
        ids = [e.id for e in prober.add([EditInput(entity["subject"], f["prompt"], f["target"], kind="insert")
                                         for f in facts])]
        for fact in facts:
            task.outcomes.append(prober.follows(entity["subject"], "reliability", fact["prompt"], fact["target"]))
            task.outcomes += [prober.follows(entity["subject"], "paraphrase", p, fact["target"])
                              for p in fact["paraphrases"]]
        prober.delete(ids)
        progress(done, len(entities))
    return task


def run_patch(prober: Prober, rules: Sequence[dict[str, Any]], route: str | None, examples: bool,
              progress: Progress) -> Task:
    """`route` None: through the gate (covered and uncovered questions); otherwise that route answers the covered
    questions from the patch, to compare how well each reads a rule."""
    task = Task("patch", notes={"route": route or "gate", "examples_as_key_texts": examples})
    for done, rule in enumerate(rules, 1):
        paraphrases = tuple(rule["examples"]) if examples else ()
        (patch,) = prober.add([EditInput(rule["subject"], rule["rule"], "", paraphrases=paraphrases, kind="patch")])
        for question in rule["covered"]:
            task.outcomes.append(prober.follows(rule["subject"], "covered", question["prompt"], question["answer"],
                                                route, patch.id if route else None))
        if route is None:
            task.outcomes.append(prober.unchanged(rule["subject"], "uncovered", rule["uncovered"]["prompt"], None))
        prober.delete([patch.id])
        progress(done, len(rules))
    return task


def run_supersede(prober: Prober, cases: Sequence[Case], progress: Progress) -> Task:
    """The newer target is the next case's new target that differs from both answers of this case."""
    task = Task("supersede")
    linked = 0
    targets = [c.edits[0].target_new for c in cases]
    for done, case in enumerate(cases, 1):
        (fact,) = case.edits
        newer = next(t for t in [*targets[done:], *targets[:done]] if t not in (fact.target_new, fact.target_true))
        (older,) = prober.add([EditInput(fact.subject, fact.prompt, fact.target_new, fact.target_true)])
        (record,) = prober.add([EditInput(fact.subject, fact.prompt, newer, fact.target_true)])
        linked += record.supersedes == older.id
        probes = (("edited_prompt", case.reliability), ("paraphrase", case.generalization))
        for category, items in probes:
            task.outcomes += [prober.follows(case.case_id, f"newer_{category}", p.prompt, newer) for p in items]
        prober.delete([record.id])  # the older edit answers again
        for category, items in probes:
            task.outcomes += [prober.follows(case.case_id, f"restored_{category}", p.prompt, fact.target_new)
                              for p in items]
        prober.delete([older.id])
        progress(done, len(cases))
    task.notes["newer_edit_named_the_older_in_supersedes"] = linked / max(len(cases), 1)
    return task


def write_json(path: Path, summary: dict[str, Any], task: Task, settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"settings": settings, "summary": summary, "outcomes": [asdict(o) for o in task.outcomes]}
    path.write_text(json.dumps(document, indent=1))


def markdown(summary: dict[str, Any]) -> str:
    lines = ["| probes | n | exact match (greedy) | teacher-forced | routes |", "|---|---|---|---|---|"]
    for category, figures in summary.items():
        if isinstance(figures, dict) and "em" in figures:
            lines.append(f"| {category} | {figures['n']} | {figures['em']:.3f} | {figures['tf']:.3f} | "
                         f"{', '.join(f'{r} {n}' for r, n in figures['routes'].items())} |")
    return "\n".join(lines)
