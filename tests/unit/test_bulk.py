"""client/bulk.py: reading import files with the line of each refused record, the JSON-lines form, batching, and
sending with a server that refuses some edits (a fake `add`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import fields
from pathlib import Path

import pytest

from client import EditInput, EditRecord
from client.bulk import (
    ImportResult,
    Record,
    SourceError,
    batches,
    edit_from_json,
    edit_to_json,
    read_source,
    send,
)
from client.errors import InvalidArgument, Unavailable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eval"


def flat(subject: str, prompt: str, target: str = "Rome") -> dict[str, object]:
    return {"subject": subject, "prompt": prompt, "target_new": target, "ground_truth": "Paris",
            "rephrase_prompt": f"Where is {subject}?", "locality_prompt": "x", "locality_ground_truth": "y"}


def write_list(tmp_path: Path, records: list[object]) -> Path:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(records, indent=4), encoding="utf-8")
    return path


def test_a_benchmark_file_gives_its_good_records_and_refuses_the_bad_ones_by_line(tmp_path: Path) -> None:
    path = write_list(tmp_path, [
        flat("Eiffel Tower", "The Eiffel Tower is in"),
        flat("Louvre", "The Louvre is in", target="  "),  # blank target: the readers' BlankEditFieldError
        flat("Colosseum", "The Arena is in"),  # subject not in the prompt: the server's rule, checked here
        {"subject": "Big Ben", "target_new": "Paris"},  # no prompt
        "not an object",
        flat("Tab\x01", "Tab\x01 is in"),  # a control character
        flat("Big Ben", "Big Ben is in"),
    ])
    lines = path.read_text().splitlines()
    records, refused = read_source(path, "counterfact")

    assert [(r.index, r.edits[0].subject) for r in records] == [(0, "Eiffel Tower"), (6, "Big Ben")]
    assert records[0].edits == (EditInput("Eiffel Tower", "The Eiffel Tower is in", "Rome", "Paris"),)
    # each line is where its record's "{" or value starts
    assert [lines[r.line - 1].strip() for r in records] == ["{", "{"]
    assert [lines[r.line - 1].strip() for r in refused] == ["{", "{", "{", '"not an object",', "{"]
    reasons = {r.index: r.reason for r in refused}
    assert reasons[1] == "record 1: field 'target_new' is blank"
    assert reasons[2] == "record 2: subject 'Colosseum' does not occur in prompt 'The Arena is in'"
    assert reasons[3].startswith("record 3: field 'prompt' must be a non-empty string")
    assert reasons[4] == "record 4: expected a JSON object, got str"
    assert reasons[5] == "record 5: subject contains the control character '\\x01' at position 3"


@pytest.mark.parametrize(("name", "fmt", "records", "edits"), [
    ("counterfact_flat.json", "counterfact", 3, 3),
    ("counterfact_rome.json", "counterfact", 2, 2),
    ("zsre_mend.json", "zsre", 3, 3),
    ("knowedit.json", "knowedit", 3, 3),
    ("mquake.json", "mquake", 2, 3),
])
def test_every_benchmark_format_reads(name: str, fmt: str, records: int, edits: int) -> None:
    read, refused = read_source(FIXTURES / name, fmt)
    assert (len(read), sum(len(r.edits) for r in read), refused) == (records, edits, [])


def test_a_file_that_is_not_a_json_list_is_refused_whole_naming_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"subject": "a"},\n  {"subject": \n]\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"broken.json:4: not valid JSON"):
        read_source(broken, "counterfact")
    missing_comma = tmp_path / "comma.json"
    missing_comma.write_text('[\n{"a": 1}\n\n{"b": 2}]', encoding="utf-8")
    with pytest.raises(SourceError, match=r"comma.json:4: .*expected ',' or ']' after record 0"):
        read_source(missing_comma, "counterfact")
    with pytest.raises(SourceError, match="expected a JSON list"):
        read_source(write_list(tmp_path, {"a": 1}), "counterfact")  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="cannot read"):
        read_source(tmp_path / "absent.json", "jsonl")
    assert read_source(write_list(tmp_path, []), "zsre") == ([], [])


def test_jsonl_lines_are_numbered_past_blank_lines_and_bad_lines_are_refused(tmp_path: Path) -> None:
    good = {"subject": "France", "prompt": "The capital of France is", "target_new": "Rome"}
    path = tmp_path / "edits.jsonl"
    path.write_text("\n".join([
        json.dumps(good),
        "",
        "{not json",
        json.dumps({**good, "colour": "red"}),
        json.dumps({**good, "paraphrases": "one string"}),
        json.dumps({**good, "target_true": 3}),
        json.dumps({"subject": "France", "prompt": "The capital of France is"}),
        json.dumps({**good, "paraphrases": ["What is France's capital?"], "target_true": None}),
        json.dumps({**good, "kind": "forget"}),
        json.dumps({"subject": "", "prompt": "", "target_new": "", "kind": "regex", "pattern": "colou?r",
                    "replacement": "color"}),
    ]) + "\n", encoding="utf-8")
    records, refused = read_source(path, "jsonl")
    assert [(r.line, r.index) for r in records] == [(1, 0), (8, 6), (10, 8)]
    assert records[1].edits == (EditInput("France", "The capital of France is", "Rome", None,
                                          ("What is France's capital?",)),)
    # other kinds' rules are the server's to check
    assert records[2].edits == (EditInput("", "", "", kind="regex", pattern="colou?r", replacement="color"),)
    assert [(r.line, r.reason) for r in refused] == [
        (3, "record 1: not JSON: Expecting property name enclosed in double quotes at column 2"),
        (4, "record 2: unknown field(s) colour; known: " + ", ".join(f.name for f in fields(EditInput))),
        (5, "record 3: field 'paraphrases' must be a list, got a string"),
        (6, "record 4: field 'target_true' must be a string, got a number"),
        (7, "record 5: missing field(s) target_new"),
        (9, "record 7: kind must be one of modify, insert, erase, patch, regex; got 'forget'"),
    ]


def test_the_jsonl_form_holds_every_field_of_edit_input_and_reads_back_equal() -> None:
    edit = EditInput("Space Needle", "The Space Needle is in", "", "Seattle", ("Where is the Space Needle?",),
                     kind="erase")
    obj = edit_to_json(edit)
    assert set(obj) == {f.name for f in fields(EditInput)}
    assert edit_from_json(json.loads(json.dumps(obj))) == edit
    assert edit_from_json({"subject": "a", "prompt": "a b", "target_new": "c"}) == EditInput("a", "a b", "c")
    # a stored edit's server-set fields stay out
    stored = EditRecord(id="0" * 32, namespace="ns", created_at_unix_s=1.0, version=3, supersedes="1" * 32,
                        **dataclasses.asdict(edit))
    assert edit_to_json(stored) == obj


def record(index: int, edits: int = 1) -> Record:
    return Record(index + 1, index, tuple(EditInput(f"s{index}", f"s{index} is in", f"t{index}.{j}")
                                          for j in range(edits)))


def test_batches_hold_at_most_the_size_in_edits_and_keep_a_record_whole() -> None:
    records = [record(0), record(1, edits=3), record(2), record(3, edits=5), record(4)]
    assert [[r.index for r in b] for b in batches(records, 4)] == [[0, 1], [2], [3], [4]]
    with pytest.raises(ValueError, match="at least 1"):
        next(batches(records, 0))


class FakeServer:
    """AddEdits, all or none: refuses a request holding a subject in `bad`, naming it as the server does."""

    def __init__(self, *bad: str) -> None:
        self.bad = set(bad)
        self.stored: list[EditInput] = []
        self.requests = 0

    def add(self, edits: list[EditInput]) -> list[EditRecord]:
        self.requests += 1
        for i, edit in enumerate(edits):
            if edit.subject in self.bad:
                raise InvalidArgument(f"edits[{i}].subject {edit.subject!r} is refused")
        self.stored.extend(edits)
        # an edit of a subject stored before replaces it, as the server's supersede does for the same fact
        subjects = [e.subject for e in self.stored]
        return [stored_record(e, supersedes=subjects.index(e.subject) < len(self.stored) - len(edits) + i)
                for i, e in enumerate(edits)]


def stored_record(edit: EditInput, *, supersedes: bool = False) -> EditRecord:
    return EditRecord(id="0" * 32, namespace="ns", created_at_unix_s=1.0, supersedes="1" * 32 if supersedes else "",
                      **dataclasses.asdict(edit))


def test_a_refused_batch_is_halved_so_its_good_records_go_in() -> None:
    server = FakeServer("s2", "s5")
    records = [record(i) for i in range(8)] + [record(0)]  # the last one an edit of a stored subject
    result = ImportResult()
    for batch in batches(records, 4):
        send(batch, server.add, result)
    assert [e.subject for e in server.stored] == ["s0", "s1", "s3", "s4", "s6", "s7", "s0"]
    assert (result.added, result.records_added, result.superseding) == (7, 7, 1)
    assert [(r.line, r.reason) for r in result.refused] == [
        (3, "record 2: subject 's2' is refused"), (6, "record 5: subject 's5' is refused")]
    # each batch of 4: itself, two halves, the bad half's two records
    fallbacks = [(f.first_line, f.last_line, f.records, f.requests) for f in result.fallbacks]
    assert fallbacks == [(1, 4, 4, 5), (5, 8, 4, 5)]


def test_a_record_of_several_edits_is_refused_whole_naming_the_edit() -> None:
    server = FakeServer("s1")
    result = ImportResult()
    send([record(0), Record(2, 1, (*record(9).edits, *record(1).edits))], server.add, result)
    assert [e.subject for e in server.stored] == ["s0"]
    assert [r.reason for r in result.refused] == ["record 1: edit 1: subject 's1' is refused"]


def test_a_refusal_not_about_an_edit_or_another_error_stops_the_import() -> None:
    def bad_namespace(edits: list[EditInput]) -> list[EditRecord]:
        raise InvalidArgument("namespace 'a b' is invalid")

    with pytest.raises(InvalidArgument, match="namespace"):
        send([record(0), record(1)], bad_namespace, ImportResult())

    stored: list[EditInput] = []

    def down_after_one(edits: list[EditInput]) -> list[EditRecord]:
        if stored:
            raise Unavailable("server going away")
        stored.extend(edits)
        return [stored_record(e) for e in edits]

    result = ImportResult()
    send([record(0)], down_after_one, result)
    with pytest.raises(Unavailable):
        send([record(1)], down_after_one, result)
    assert (result.added, result.refused) == (1, [])
