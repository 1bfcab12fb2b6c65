"""Benchmark records as plain evaluation cases: one reader per published format, and format detection.

Every format becomes the same `editdata.cases.Case`: the edit(s) to register with the server, and the
probes to ask afterwards, grouped by what they measure. Probes with a blank prompt or no usable answer are
dropped rather than kept as probes that can never score.

Formats (`fmt` names; see ../shared/data/README.md):

- "counterfact": CounterFact, either EasyEdit's flat form (`prompt`, `rephrase_prompt`,
  `locality_prompt`, ...) or ROME's original form (`requested_rewrite{prompt with "{}", subject,
  target_new{str}, target_true{str}}`, `paraphrase_prompts`, `neighborhood_prompts`, optional
  `portability{"New Question", "New Answer"}`). The form is decided per record.
- "zsre": zsRE as released with MEND (`src`, `rephrase`, `alt`, `answers`, `loc`, `loc_ans`), with
  EasyEdit's optional `portability` and `inverse question`.
- "knowedit": KnowEdit (`prompt`, `target_new`, `ground_truth`, `locality{...}`, `portability{...}`);
  `zsre/dev.json` is in this form.
- "mquake": MQuAKE (`requested_rewrite[]`, `questions[]`, `new_answer`, `new_answer_alias[]`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from editdata.cases import Case, EditFact, Probe

FORMATS: tuple[str, ...] = ("counterfact", "zsre", "knowedit", "mquake")

log = logging.getLogger(__name__)

# KnowEdit `portability` kinds, all one-hop consequences of the edit (answer follows target_new), and the
# `Probe.kind` each becomes (editdata.cases.PORTABILITY_KINDS).
KNOWEDIT_PORTABILITY_KINDS: dict[str, str] = {
    "Reasoning": "reasoning", "Logical_Generalization": "logical", "Subject_Aliasing": "alias",
}
# EasyEdit's {"New Question", "New Answer"} portability (CounterFact, MEND zsRE) asks one-hop questions about the
# new object: reasoning.
NEW_QUESTION_KIND = "reasoning"
# KnowEdit `locality` kinds. Both ask about the edited subject and expect the unedited answer:
# Relation_Specificity under another relation; Forgetfulness under the edited relation, excluding
# target_new ("..., which is not X, is"). Neither is a neighbourhood (other-subject) prompt.
KNOWEDIT_SAME_SUBJECT_KINDS: tuple[str, ...] = ("Relation_Specificity", "Forgetfulness")


class BlankEditFieldError(ValueError):
    """A record has an edit field (subject, prompt, target) that is present but blank."""


def load_cases(path: Path, fmt: str | None = None, *, strict: bool = False) -> tuple[str, list[Case]]:
    """Read a benchmark file (a JSON list of records) and return its format name and its cases.

    `fmt` is one of FORMATS, or None to detect it from the first record's keys. Raises ValueError
    for an unknown format, a file that is not a JSON list of objects, or a record missing a field
    its format requires (the message names the record and the field). A record whose edit field is
    present but blank (two zsRE train-1k records have `alt: ""`) cannot be edited: it is skipped with
    a logged warning naming it, or raises ValueError when `strict`.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: expected a JSON list of objects (one record each)")
    if fmt is None:
        if not data:
            raise ValueError(f"{path}: no records, so the format cannot be detected; pass fmt= explicitly")
        fmt = detect_format(data[0])
    try:
        return fmt, parse_records(data, fmt, strict=strict)
    except ValueError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def detect_format(record: Mapping[str, Any]) -> str:
    """The format name (one of FORMATS) whose fields `record` has; ValueError when none fits."""
    keys = set(record)
    if "requested_rewrite" in keys:
        if isinstance(record["requested_rewrite"], list) or "questions" in keys:
            return "mquake"
        return "counterfact"
    if {"src", "alt"} <= keys:
        return "zsre"
    if "locality_prompt" in keys:
        return "counterfact"
    if {"subject", "prompt", "target_new"} <= keys:
        return "knowedit"
    raise ValueError(
        f"unknown benchmark format: a record with keys {sorted(keys)} matches none of {', '.join(FORMATS)} "
        "(expected requested_rewrite for ROME CounterFact/MQuAKE, src+alt for MEND zsRE, locality_prompt for "
        "EasyEdit CounterFact, subject+prompt+target_new for KnowEdit)"
    )


def parse_records(records: Sequence[Mapping[str, Any]], fmt: str, *, strict: bool = False) -> list[Case]:
    """Turn already-loaded records of format `fmt` into cases (ValueError on an unknown format).

    Records with a blank edit field are skipped with a logged warning, or raise when `strict`.
    """
    _check_format(fmt)
    cases: list[Case] = []
    blank: list[str] = []
    for index, record in enumerate(records):
        try:
            cases.append(read_case(record, fmt, index))
        except BlankEditFieldError as exc:
            if strict:
                raise
            blank.append(str(exc))
    if blank:
        log.warning(
            "skipped %d of %d %s records with a blank edit field: %s", len(blank), len(records), fmt, "; ".join(blank)
        )
    return cases


def read_case(record: Mapping[str, Any], fmt: str, index: int) -> Case:
    """One record of format `fmt` as a case, `index` naming it in messages: for callers that take a file's good
    records and report its bad ones (editctl import). ValueError names the record and field; a blank edit field
    raises BlankEditFieldError (a ValueError)."""
    _check_format(fmt)
    return _READERS[fmt](record, index)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown benchmark format {fmt!r}; expected one of {', '.join(FORMATS)}")


# --- one reader per format -------------------------------------------------------------------------


def _counterfact_case(record: Mapping[str, Any], index: int) -> Case:
    if "requested_rewrite" in record:
        return _rome_counterfact_case(record, index)
    subject = _text(record, "subject", index)
    prompt = _text(record, "prompt", index)
    target_new = _text(record, "target_new", index)
    target_true = _first(_answers(record.get("ground_truth")))
    return Case(
        case_id=_case_id(record, index),
        edits=(EditFact(subject, prompt, target_new, target_true),),
        reliability=_probes([prompt], (target_new,)),
        generalization=_probes(_prompts(record.get("rephrase_prompt")), (target_new,)),
        locality=_probes(_prompts(record.get("locality_prompt")), _answers(record.get("locality_ground_truth"))),
    )


def _rome_counterfact_case(record: Mapping[str, Any], index: int) -> Case:
    """ROME's own CounterFact form.

    `neighborhood_prompts` are other subjects whose true answer is target_true (ROME's definition), so
    they are locality probes answered by target_true. `attribute_prompts` are skipped: they ask about
    other subjects whose true answer happens to be target_new, so they are neither same-subject probes
    nor probes whose answer we know independently of the edit's own object; `generation_prompts` are
    free-generation seeds with no answer.
    """
    edit = _rewrite(record["requested_rewrite"], index)
    new = (edit.target_new,)
    true = (edit.target_true,) if edit.target_true else ()
    return Case(
        case_id=_case_id(record, index),
        edits=(edit,),
        reliability=_probes([edit.prompt], new),
        generalization=_probes(_prompts(record.get("paraphrase_prompts")), new),
        locality=_probes(_prompts(record.get("neighborhood_prompts")), true),
        portability=_portability(record.get("portability")),
    )


def _zsre_case(record: Mapping[str, Any], index: int) -> Case:
    """MEND zsRE. `loc` is kept verbatim (with its "nq question: " prefix), as EasyEdit feeds it."""
    subject = _text(record, "subject", index)
    question = _text(record, "src", index)
    target_new = _text(record, "alt", index)
    new = (target_new,)
    return Case(
        case_id=_case_id(record, index),
        edits=(EditFact(subject, question, target_new, _first(_answers(record.get("answers")))),),
        reliability=_probes([question], new),
        generalization=_probes(_prompts(record.get("rephrase")), new),
        locality=_probes(_prompts(record.get("loc")), _answers(record.get("loc_ans"))),
        portability=_portability(record.get("portability")),
        reverse=_probes(_prompts(record.get("inverse question")), (subject,)),
    )


def _knowedit_case(record: Mapping[str, Any], index: int) -> Case:
    """KnowEdit. Its `locality` holds same-subject probes only (see KNOWEDIT_SAME_SUBJECT_KINDS)."""
    subject = _text(record, "subject", index)
    prompt = _text(record, "prompt", index)
    target_new = _text(record, "target_new", index)
    locality = record.get("locality") or {}
    portability = record.get("portability") or {}
    return Case(
        case_id=_case_id(record, index),
        edits=(EditFact(subject, prompt, target_new, _first(_answers(record.get("ground_truth")))),),
        reliability=_probes([prompt], (target_new,)),
        generalization=_probes(_prompts(record.get("rephrase_prompt")), (target_new,)),
        same_subject=_prompt_answer_items(_kinds(locality, KNOWEDIT_SAME_SUBJECT_KINDS)),
        portability=_knowedit_portability(portability),
    )


def _mquake_case(record: Mapping[str, Any], index: int) -> Case:
    rewrites = record.get("requested_rewrite")
    if not isinstance(rewrites, list) or not rewrites:
        raise ValueError(f"record {index}: requested_rewrite must be a non-empty list in MQuAKE")
    edits = tuple(_rewrite(rewrite, index) for rewrite in rewrites)
    new_answer = _text(record, "new_answer", index)
    multi_hop_answers = _answers([new_answer, *(record.get("new_answer_alias") or [])])
    return Case(
        case_id=_case_id(record, index),
        edits=edits,
        reliability=tuple(p for e in edits for p in _probes([e.prompt], (e.target_new,))),
        multi_hop=_probes(_prompts(record.get("questions")), multi_hop_answers),
    )


_READERS: dict[str, Callable[[Mapping[str, Any], int], Case]] = {
    "counterfact": _counterfact_case,
    "zsre": _zsre_case,
    "knowedit": _knowedit_case,
    "mquake": _mquake_case,
}


# --- shared pieces -----------------------------------------------------------------------------------


def _case_id(record: Mapping[str, Any], index: int) -> str:
    for key in ("case_id", "id"):
        if record.get(key) is not None:
            return str(record[key])
    return str(index)


def _text(record: Mapping[str, Any], key: str, index: int) -> str:
    value = record.get(key)
    if isinstance(value, dict):  # ROME-style {"str": ..., "id": ...}
        value = value.get("str")
    if not isinstance(value, str):
        raise ValueError(f"record {index}: field {key!r} must be a non-empty string, got {value!r}")
    if not value.strip():
        raise BlankEditFieldError(f"record {index}: field {key!r} is blank")
    return value


def _rewrite(rewrite: Any, index: int) -> EditFact:
    """A ROME-style requested_rewrite: `prompt` holds "{}" where the subject goes."""
    if not isinstance(rewrite, dict):
        raise ValueError(f"record {index}: requested_rewrite must be an object, got {type(rewrite).__name__}")
    subject = _text(rewrite, "subject", index)
    template = _text(rewrite, "prompt", index)
    if "{}" not in template:
        raise ValueError(f"record {index}: requested_rewrite prompt {template!r} has no '{{}}' for the subject")
    # str.replace, not str.format: same result for ROME's templates, and literal braces elsewhere do no harm.
    prompt = template.replace("{}", subject)
    true = rewrite.get("target_true")
    target_true = _first(_answers(true.get("str") if isinstance(true, dict) else true))
    return EditFact(subject, prompt, _text(rewrite, "target_new", index), target_true)


def _answers(value: Any) -> tuple[str, ...]:
    """Normalise a ground truth to a tuple of answers, canonical first.

    A string gives (s,); a list of strings gives that tuple; a list of alias lists (KnowEdit, one
    list per true object) gives the first non-empty alias list. Blank strings and repeats are dropped.
    """
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        if any(isinstance(v, list) for v in value):
            items = next((v for v in value if isinstance(v, list) and _strings(v)), [])
        else:
            items = value
    else:
        items = []
    return tuple(dict.fromkeys(_strings(items)))


def _strings(items: Iterable[Any]) -> list[str]:
    return [s for s in items if isinstance(s, str) and s.strip()]


def _first(answers: tuple[str, ...]) -> str | None:
    return answers[0] if answers else None


def _prompts(value: Any) -> list[str]:
    """One prompt (a string) or several (a list of strings, or of {"prompt": ...} objects)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return _strings(v.get("prompt") if isinstance(v, dict) else v for v in value)
    return []


def _probes(prompts: Iterable[str], answers: tuple[str, ...], kind: str = "") -> tuple[Probe, ...]:
    if not answers:
        return ()
    return tuple(Probe(prompt, answers, kind) for prompt in prompts if prompt.strip())


def _kinds(section: Any, kinds: Sequence[str]) -> list[Any]:
    """The items under each of `kinds` in a KnowEdit locality/portability dict, in that order."""
    if not isinstance(section, dict):
        return []
    return [item for kind in kinds for item in (section.get(kind) or [])]


def _prompt_answer_items(items: Iterable[Any], kind: str = "") -> tuple[Probe, ...]:
    """Probes from [{prompt, ground_truth}, ...]; items without a prompt or an answer are dropped."""
    probes: list[Probe] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        for prompt in _prompts(item.get("prompt")):
            probes.extend(_probes([prompt], _answers(item.get("ground_truth")), kind))
    return tuple(probes)


def _knowedit_portability(section: Any) -> tuple[Probe, ...]:
    """KnowEdit's {kind: [{prompt, ground_truth}]}, each probe marked with its kind, in KNOWEDIT_PORTABILITY_KINDS'
    order."""
    return tuple(p for name, kind in KNOWEDIT_PORTABILITY_KINDS.items()
                 for p in _prompt_answer_items(_kinds(section, [name]), kind))


def _portability(value: Any) -> tuple[Probe, ...]:
    """EasyEdit's portability for CounterFact/zsRE: {"New Question", "New Answer"}, or a list of
    {prompt, ground_truth} (or of such dicts), or KnowEdit's {kind: [{prompt, ground_truth}]}. The first two are
    one-hop questions (NEW_QUESTION_KIND)."""
    if isinstance(value, list):
        return tuple(p for item in value for p in _portability(item))
    if not isinstance(value, dict):
        return ()
    if "New Question" in value:
        return _probes(_prompts(value.get("New Question")), _answers(value.get("New Answer")), NEW_QUESTION_KIND)
    if "prompt" in value:
        return _prompt_answer_items([value], NEW_QUESTION_KIND)
    return _knowedit_portability(value)
