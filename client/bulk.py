"""Bulk import and export of edits: records of a file → EditInput, batches, and the refusals to report.

`editctl import` reads the benchmark formats through `editdata.readers` (the evaluation harness's readers, so an
imported file registers the edits an evaluation of it would) and this module's JSON-lines form, which
`editctl export-edits` writes: one JSON object per edit holding EditInput's fields, so a field added to EditInput
is exported and imported with no change here. Nothing here talks to the server: `send` takes a function that stores
a batch (EditcacheClient.add_edits).
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from client.errors import InvalidArgument, ResourceExhausted
from client.records import EditInput, EditRecord
from editdata.readers import FORMATS, read_case

JSONL = "jsonl"
IMPORT_FORMATS: tuple[str, ...] = (*FORMATS, JSONL)
# The server's refusal of one edit of a request names it "edits[i]..." (server/validation.py); other refusals are
# about the whole request (its namespace, say), and refusing every record for one of those would hide it.
_ABOUT_AN_EDIT = re.compile(r"edits\[(\d+)\]\.?")
# JSON's whitespace, between a list's items.
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# C0 control characters other than tab and newline, which the server refuses in edit text.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f]")


class SourceError(ValueError):
    """The file as a whole cannot be read (not JSON, not a list of records): nothing is imported."""


@dataclass(frozen=True)
class Record:
    """Some edits to store together, and where in the file they came from (`line` 1-based, `index` 0-based)."""

    line: int
    index: int
    edits: tuple[EditInput, ...]


@dataclass(frozen=True)
class Refusal:
    """A record that was not stored, and why; `reason` starts with "record N:"."""

    line: int
    index: int
    reason: str


@dataclass(frozen=True)
class Fallback:
    """A batch the server refused as a whole, which was resent in halves until each part was stored or refused."""

    first_line: int
    last_line: int
    records: int
    requests: int  # AddEdits calls the halving took


@dataclass
class ImportResult:
    added: int = 0  # edits stored
    records_added: int = 0
    superseding: int = 0  # added edits that replaced a live edit of the same fact (which stays as history)
    refused: list[Refusal] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)


# --- reading ---------------------------------------------------------------------------------------------------


def read_source(path: Path, fmt: str) -> tuple[list[Record], list[Refusal]]:
    """The file's records as edits to send, and the records refused on reading (bad JSON on a line of a JSON-lines
    file, a field missing or of the wrong type, a benchmark record the server would refuse: `check_fact`).
    SourceError when the file cannot be read."""
    if fmt not in IMPORT_FORMATS:
        raise SourceError(f"unknown format {fmt!r}; expected one of {', '.join(IMPORT_FORMATS)}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    items = _json_lines(text) if fmt == JSONL else _json_list_items(text, path)
    records: list[Record] = []
    refused: list[Refusal] = []
    for line, index, value in items:
        try:
            if isinstance(value, json.JSONDecodeError):
                raise ValueError(f"not JSON: {value.msg} at column {value.colno}")
            edits = (edit_from_json(value),) if fmt == JSONL else _case_edits(value, fmt, index)
        except (ValueError, TypeError) as exc:
            refused.append(Refusal(line, index, _about_record(index, str(exc))))
        else:
            records.append(Record(line, index, edits))
    return records, refused


def _case_edits(value: Any, fmt: str, index: int) -> tuple[EditInput, ...]:
    if not isinstance(value, dict):
        raise ValueError(f"record {index}: expected a JSON object, got {type(value).__name__}")
    # As the evaluation harness registers a case (client/evaluation/runner.py): its edits, without paraphrases,
    # which the benchmarks hold as probes.
    case = read_case(value, fmt, index)
    edits = tuple(EditInput(e.subject, e.prompt, e.target_new, e.target_true) for e in case.edits)
    for edit in edits:
        check_fact(edit)
    return edits


def _about_record(index: int, reason: str) -> str:
    prefix = f"record {index}: "
    return reason if reason.startswith(prefix) else prefix + reason


def _json_lines(text: str) -> Iterator[tuple[int, int, Any]]:
    """(line, index, value) per non-blank line; a line that is not JSON gives its JSONDecodeError as the value."""
    index = 0
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError as exc:
            value = exc
        yield line, index, value
        index += 1


def _json_list_items(text: str, path: Path) -> list[tuple[int, int, Any]]:
    """(line, index, value) per item of the JSON list that is the whole file, `line` where the item starts.

    Decoded item by item so that a refusal can name its line; a syntax error anywhere refuses the file, since
    where the next item starts is then unknown.
    """
    decoder = json.JSONDecoder()
    items: list[tuple[int, int, Any]] = []
    pos, line, counted = _skip(text, 0), 1, 0
    if text[pos:pos + 1] != "[":
        raise SourceError(f"{path}: expected a JSON list of records, one object each")
    pos = _skip(text, pos + 1)
    if text[pos:pos + 1] == "]":
        return items
    while True:
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} at column {exc.colno}") from None
        items.append((line, len(items), value))
        pos = _skip(text, pos)
        if text[pos:pos + 1] == ",":
            pos = _skip(text, pos + 1)
        elif text[pos:pos + 1] == "]" and not text[_skip(text, pos + 1):]:
            return items
        else:
            line += text.count("\n", counted, pos)
            raise SourceError(f"{path}:{line}: not valid JSON: expected ',' or ']' after record {len(items) - 1}")


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


# --- the JSON-lines form: EditInput's fields, whatever they are ---------------------------------------------------


def edit_to_json(edit: EditInput | EditRecord) -> dict[str, Any]:
    """The EditInput fields of an edit as a JSON object (a stored edit's id, namespace and times are left out)."""
    return {f.name: _to_json(getattr(edit, f.name)) for f in fields(EditInput)}


def edit_from_json(value: Any) -> EditInput:
    """The EditInput a JSON object holds (`edit_to_json`'s inverse); ValueError naming the field when it does not."""
    names = [f.name for f in fields(EditInput)]
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object with fields {', '.join(names)}, got {type(value).__name__}")
    if unknown := sorted(set(value) - set(names)):
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(names)}")
    required = [f.name for f in fields(EditInput) if f.default is MISSING and f.default_factory is MISSING]
    if missing := [name for name in required if name not in value]:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    hints = typing.get_type_hints(EditInput)
    return EditInput(**{name: _from_json(name, hints[name], v) for name, v in value.items()})


def _to_json(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(name: str, hint: Any, value: Any) -> Any:
    """`value` as a field typed `hint`: str, int, float, bool, an Enum (by value), X | None, tuple[X, ...]."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _from_json(name, inner, value)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list):
            raise ValueError(f"field {name!r} must be a list, got {_json_type(value)}")
        return tuple(_from_json(f"{name}[{i}]", args[0], v) for i, v in enumerate(value))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise ValueError(f"field {name!r} must be one of {', '.join(repr(m.value) for m in hint)}") from None
    # bool is an int in Python, not in JSON
    if isinstance(hint, type) and isinstance(value, hint) and not (isinstance(value, bool) and hint is not bool):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"field {name!r} must be {_json_name(hint)}, got {_json_type(value)}")


def _json_name(hint: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def export_lines(edits: Iterable[EditRecord]) -> Iterator[str]:
    """One JSON line per edit, as `import --format jsonl` reads them (non-ASCII kept as it is)."""
    for edit in edits:
        yield json.dumps(edit_to_json(edit), ensure_ascii=False)


# --- the server's rules, checked before sending ---------------------------------------------------------------


def check_fact(edit: EditInput) -> None:
    """The server's rules for a modify edit (server/validation.py) that do not depend on its configured limits, so
    that a bad benchmark record is refused here instead of failing its batch. ValueError says what is wrong.

    Benchmark records are all modify edits; a JSON-lines record can be of any kind, whose rules differ
    (server/validation.py): the server alone checks those, and a batch it refuses is halved (`send`).
    """
    for name in ("subject", "prompt", "target_new"):
        _check_text(name, getattr(edit, name))
    if edit.target_true is not None:
        _check_text("target_true", edit.target_true)
    for j, paraphrase in enumerate(edit.paraphrases):
        _check_text(f"paraphrases[{j}]", paraphrase)
    for j, alias in enumerate(edit.aliases):
        _check_text(f"aliases[{j}]", alias)
    if edit.subject not in edit.prompt:
        raise ValueError(f"subject {edit.subject!r} does not occur in prompt {edit.prompt!r}")


def _check_text(name: str, value: str) -> None:
    if not value.strip():
        raise ValueError(f"{name} is blank")
    if found := _CONTROL_CHARACTERS.search(value):
        raise ValueError(f"{name} contains the control character {found.group()!r} at position {found.start()}")


# --- sending ------------------------------------------------------------------------------------------------------


def batches(records: Sequence[Record], size: int) -> Iterator[list[Record]]:
    """Consecutive records with at most `size` edits between them (a record with more goes alone): a record's
    edits go in one request, so it is stored whole or refused whole."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    batch: list[Record] = []
    edits = 0
    for record in records:
        if batch and edits + len(record.edits) > size:
            yield batch
            batch, edits = [], 0
        batch.append(record)
        edits += len(record.edits)
    if batch:
        yield batch


def send(batch: Sequence[Record], add: Callable[[list[EditInput]], Sequence[EditRecord]], result: ImportResult) -> None:
    """Store `batch` with `add` (all or none, as AddEdits does) and record the outcome in `result`.

    When the server refuses the batch (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for its size), the halves are sent
    again, down to single records: the good records go in and each bad one is refused with the server's reason.
    Other errors, and a refusal of a single record that is not about the record, propagate: the import stops, with
    `result` saying what went in.
    """
    calls = 0

    def counted(edits: list[EditInput]) -> Sequence[EditRecord]:
        nonlocal calls
        calls += 1
        return add(edits)

    if not _send_halving(batch, counted, result):
        result.fallbacks.append(Fallback(batch[0].line, batch[-1].line, len(batch), calls))


def _send_halving(
    batch: Sequence[Record], add: Callable[[list[EditInput]], Sequence[EditRecord]], result: ImportResult,
) -> bool:
    """True when `batch` went in as one request."""
    try:
        stored = add([edit for record in batch for edit in record.edits])
    except (InvalidArgument, ResourceExhausted) as exc:
        if len(batch) > 1:
            middle = len(batch) // 2
            _send_halving(batch[:middle], add, result)
            _send_halving(batch[middle:], add, result)
            return False
        (record,) = batch
        if not isinstance(exc, InvalidArgument) or not (about := _ABOUT_AN_EDIT.match(exc.details)):
            raise
        # "edits[0].subject ..." is the record's own subject; a record of several edits (MQuAKE) names which.
        which = "" if len(record.edits) == 1 else f"edit {about.group(1)}: "
        result.refused.append(Refusal(record.line, record.index,
                                      _about_record(record.index, which + exc.details[about.end():])))
        return False
    result.added += len(stored)
    result.superseding += sum(1 for edit in stored if edit.supersedes)
    result.records_added += len(batch)
    return True
