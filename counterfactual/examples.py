"""Training examples for the counterfactual model, from the TRAIN files only: (edit, query) → answer.

Each benchmark case (read by `editdata.readers`) gives:
- copy: the edit's own prompt, answered with the new target;
- paraphrase: each rephrased prompt, answered with the new target;
- portability: KnowEdit's consequences of the edit (Subject_Aliasing, Logical_Generalization, Reasoning),
  answered with their first listed answer;
and queries the edit does not bear on, answered with the prompt format's abstention word (`retain`):
KnowEdit's same-subject prompts under another relation (Relation_Specificity), and CounterFact's
neighbourhood prompts (the edited relation, another subject).

Cases are split by edit, so the held-out slice holds edits the model never saw in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from editdata.cases import Case
from editdata.readers import load_cases
from server.generators.counterfactual_adapter import PromptFormat

# Relative to the shared data directory. Never val.json or dev*.json (../shared/data/README.md).
TRAIN_FILES = (
    "counterfact/train.json",
    "zsre/train-1k.json",
    "knowedit/wiki_counterfact_train.json",
    "knowedit/wiki_recent_train.json",
)
KINDS = ("copy", "paraphrase", "portability", "retain")


@dataclass(frozen=True)
class Example:
    kind: str  # one of KINDS
    edit_prompt: str
    target_new: str
    query: str
    answer: str  # for retain: "" until the trainer writes the abstention word
    subject: str = ""  # the edit's subject, as it appears in edit_prompt
    rule: str = ""  # the edit written as a patch's rule (counterfactual.rules); "": shown as the fact
    unfamiliar: bool = False  # the subject was replaced by a made-up name (`with_subject`)

    @property
    def group(self) -> str:
        """The kind, marked by the edit's form: what held-out exact match is reported by."""
        return ("rule_" if self.rule else "") + ("unfamiliar_" if self.unfamiliar else "") + self.kind

    def with_subject(self, name: str) -> Example:
        """The example about `name` instead of its subject, wherever the subject is named (an edit of something the
        model cannot know about, as insert edits and patches often are)."""
        def renamed(text: str) -> str:
            return text.replace(self.subject, name)

        return replace(self, edit_prompt=renamed(self.edit_prompt), target_new=renamed(self.target_new),
                       query=renamed(self.query), answer=renamed(self.answer), subject=name, unfamiliar=True)

    def render(self, fmt: PromptFormat) -> str:
        """The prompt the counterfactual model reads: the fact (or the rule), then the query."""
        if self.rule:
            return fmt.render_statement(self.rule, self.query)
        return fmt.render(self.edit_prompt, self.target_new, self.query)


@dataclass(frozen=True)
class TrainCase:
    source: str  # the file it came from, relative to the data directory
    case: Case


def load_train_cases(data_dir: Path, files: Sequence[str] = TRAIN_FILES) -> list[TrainCase]:
    """The single-edit cases of the train files; refuses validation and dev files."""
    cases: list[TrainCase] = []
    for name in files:
        if "val" in Path(name).stem or "dev" in Path(name).stem:
            raise ValueError(f"{name} is validation/dev data; the counterfactual model trains on train files only")
        _, read = load_cases(data_dir / name)
        cases.extend(TrainCase(name, c) for c in read if len(c.edits) == 1)
    return cases


SYLLABLES = ("ka", "lo", "ven", "dra", "mir", "tal", "sor", "quin", "bel", "tor", "zan", "rix", "mel", "dun", "vor",
             "ash", "pel", "gri", "nor", "eth", "ul", "cas", "bri", "hal")


def made_up_name(words: int, rng: random.Random) -> str:
    """A name nobody has, of `words` capitalised words of two or three syllables each, e.g. "Velmir Dratos"."""
    return " ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
                    for _ in range(words))


def split_cases(cases: Sequence[TrainCase], held_out: int, seed: int) -> tuple[list[TrainCase], list[TrainCase]]:
    """(train, held-out): `held_out` cases drawn at random, so every file is represented in proportion."""
    order = list(cases)
    random.Random(seed).shuffle(order)
    return order[held_out:], order[:held_out]


def edit_examples(case: Case) -> list[Example]:
    """The copy, paraphrase and portability examples of one single-edit case (answers known)."""
    (edit,) = case.edits
    examples = [Example("copy", edit.prompt, edit.target_new, p.prompt, p.answers[0], edit.subject)
                for p in case.reliability]
    examples += [Example("paraphrase", edit.prompt, edit.target_new, p.prompt, p.answers[0], edit.subject)
                 for p in case.generalization]
    examples += [Example("portability", edit.prompt, edit.target_new, p.prompt, p.answers[0], edit.subject)
                 for p in case.portability]
    return examples


def retain_queries(case: Case) -> list[Example]:
    """Queries the edit leaves alone, answer still empty: same subject under another relation, or a neighbour.

    zsRE's locality questions (Natural Questions, unrelated to the edit) are left out: the gate handles those.
    """
    (edit,) = case.edits
    probes = [p for p in case.same_subject if "which is not" not in p.prompt]  # not Forgetfulness: it names target_new
    probes += [p for p in case.locality if not p.prompt.startswith("nq question:")]  # CounterFact's neighbours
    return [Example("retain", edit.prompt, edit.target_new, p.prompt, "", edit.subject) for p in probes]
