"""editctl's edit and inference subcommands: add, update, history, events, ask, list, show, delete, info.

Each takes the connected client and the parsed arguments; `chat` lives in chat.py, the parametric
commands in parametric_cli.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from client.bulk import edit_from_json
from client.client import EditcacheClient
from client.output import (
    edit_json,
    edit_summary,
    edit_table,
    edit_text,
    hop_lines,
    info_text,
    iso_time,
    print_dim,
    print_json,
    result_json,
    shown,
    summary_line,
)
from client.records import EditInput, EditRecord, GenerationOptions

# What each kind of `add` needs on the command line, and what it must not be given (see EditInput).
_KIND_FLAGS = {
    "modify": (("--subject", "--prompt", "--target"), ()),
    "insert": (("--subject", "--prompt", "--target"), ()),
    "erase": (("--subject", "--prompt"), ("--target",)),
    "patch": (("--subject",), ("--prompt", "--target", "--target-true")),
    "regex": (("--replace",), ("--prompt", "--target", "--target-true", "--paraphrase", "--alias")),
}


class InputError(Exception):
    """A bad input file or argument combination: exit code 2."""


def run_add(ec: EditcacheClient, args: argparse.Namespace) -> None:
    if args.file is not None:
        given = [f for f, v in _edit_flags(args).items() if v not in (None, [], False)]
        if given:
            raise InputError(f"add: give either --file or the edit's options, not both (got {', '.join(given)})")
        records = ec.add_edits(read_specs(args.file))
        if args.json:
            superseding = {r.id: r.supersedes for r in records if r.supersedes}
            print_json({"ids": [r.id for r in records], **({"supersedes": superseding} if superseding else {})})
        else:
            for record in records:
                print(record.id)
                _note_supersession(record)
        return
    (record,) = ec.add_edits([_input_from_flags(args)])
    if args.json:
        print_json({"id": record.id, **({"supersedes": record.supersedes} if record.supersedes else {})})
    else:
        print(record.id)
        _note_supersession(record)


def _edit_flags(args: argparse.Namespace) -> dict[str, object]:
    return {"--subject": args.subject, "--prompt": args.prompt, "--target": args.target_new,
            "--target-true": args.target_true, "--paraphrase": args.paraphrases, "--alias": args.aliases,
            "--insert": args.insert,
            "--erase": args.erase, "--patch": args.patch, "--regex": args.regex, "--replace": args.replace}


def _input_from_flags(args: argparse.Namespace) -> EditInput:
    """The edit `add`'s options describe; --insert, --erase, --patch TEXT and --regex PATTERN pick the kind."""
    kind = ("insert" if args.insert else "erase" if args.erase else "patch" if args.patch is not None
            else "regex" if args.regex is not None else "modify")
    flags = _edit_flags(args)
    required, refused = _KIND_FLAGS[kind]
    if missing := [f for f in required if flags[f] is None]:
        raise InputError(f"add: missing {', '.join(missing)} (or give --file F.jsonl)")
    if extra := [f for f in refused if flags[f] not in (None, [])]:
        raise InputError(f"add: a {kind} edit takes no {', '.join(extra)}")
    if args.replace is not None and kind != "regex":
        raise InputError("add: --replace goes with --regex PATTERN")
    return EditInput(
        subject=args.subject or "", prompt=args.patch if kind == "patch" else args.prompt or "",
        target_new=args.target_new or "", target_true=args.target_true, paraphrases=tuple(args.paraphrases),
        kind=kind, pattern=args.regex or "", replacement=args.replace or "", aliases=tuple(args.aliases),
    )


def _note_supersession(record: EditRecord) -> None:
    if record.supersedes:
        print_dim(f"supersedes {record.supersedes} (deleting {record.id} brings it back)", sys.stderr)


def run_update(ec: EditcacheClient, args: argparse.Namespace) -> None:
    """Changes the fields given and keeps the others (the server takes them all: they are read first)."""
    current = ec.get_edit(args.id)
    changes: dict[str, Any] = {name: value for name, value in (
        ("subject", args.subject), ("prompt", args.prompt), ("target_new", args.target_new),
        ("target_true", args.target_true), ("pattern", args.pattern), ("replacement", args.replace),
        ("paraphrases", tuple(args.paraphrases) if args.paraphrases or args.no_paraphrases else None),
        ("aliases", tuple(args.aliases) if args.aliases or args.no_aliases else None),
    ) if value is not None}
    if not changes:
        raise InputError("update: give at least one field to change (--subject, --prompt, --target, ...)")
    record = ec.update_edit(args.id, dataclasses.replace(current.to_input(), **changes))
    if args.json:
        print_json(edit_json(record))
    else:
        print(f"updated {record.id} to version {record.version} ({edit_summary(record)})")


def run_history(ec: EditcacheClient, args: argparse.Namespace) -> None:
    edit = ec.get_edit(args.id, history=True)
    if args.json:
        print_json(edit_json(edit))
        return
    print(f"{'ID':<32}  {'V':>3}  {'WRITTEN':<25}  {'STATE':<10}  EDIT")
    for e in (edit, *edit.history):
        # An earlier version of an id carries no superseded_by; the edits it superseded do.
        state = "superseded" if e.superseded_by else "live" if e is edit else "replaced"
        written = e.updated_at_unix_s or e.created_at_unix_s
        print(f"{e.id:<32}  {e.version:>3}  {iso_time(written):<25}  {state:<10}  {edit_summary(e)}")


def run_events(ec: EditcacheClient, args: argparse.Namespace) -> None:
    if args.all:
        events = list(ec.iter_edit_events(args.page_size, edit_id=args.edit))
        more = False
    else:
        page = ec.list_edit_events(args.page_size, edit_id=args.edit)
        events, more = list(page.events), bool(page.next_page_token)
    if args.json:
        print_json([dataclasses.asdict(e) for e in events])
    elif events:
        for e in events:
            state = e.after or e.before or {}
            detail = f"{state.get('prompt') or state.get('pattern') or state.get('method', '')}"
            print(f"{e.seq:>6}  {iso_time(e.at_unix_s)}  {e.action:<19}  {e.edit_id}  "
                  f"{shown(e.token_name) or '-':<12}  {shown(detail)[:60]}")
    else:
        print(f"no events in namespace {ec.namespace!r}", file=sys.stderr)
    if more:
        print(f"showing the first {len(events)} events; --all lists every page", file=sys.stderr)


def run_ask(ec: EditcacheClient, args: argparse.Namespace) -> None:
    options = GenerationOptions(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        stop=tuple(args.stop), seed=args.seed,
    )
    if args.stream:
        stream = ec.stream(args.prompt, options=options)
        printed = False
        try:
            with stream:
                for delta in stream:
                    if not args.json:
                        print(delta, end="", flush=True)
                        printed = True
        finally:  # end the line of text, even when the stream fails part-way
            if not args.json and (printed or stream.result is not None):
                print(flush=True)
        result = stream.result
        assert result is not None  # iteration raises when the final response is missing
    else:
        result = ec.generate(args.prompt, options=options)
        if not args.json:
            print(result.text)
    if args.json:
        print_json(result_json(result))
    else:
        print_dim(summary_line(result), sys.stderr)


def run_multihop(ec: EditcacheClient, args: argparse.Namespace) -> None:
    result = ec.answer_multihop(args.question, steps=args.step)
    if args.json:
        print_json(dataclasses.asdict(result))
        return
    print(result.answer)
    for line in hop_lines(result):
        print_dim(line, sys.stderr)
    print_dim(f"[edits={','.join(result.edit_ids) or '-'} total={result.timings_ms.get('total', 0.0):.0f}ms]",
              sys.stderr)


def run_info(ec: EditcacheClient, args: argparse.Namespace) -> None:
    info = ec.server_info()
    if args.json:
        print_json(dataclasses.asdict(info))
        return
    print(info_text(info))


def run_list(ec: EditcacheClient, args: argparse.Namespace) -> None:
    if args.all:
        edits = list(ec.iter_edits(args.page_size))
        total, more = len(edits), False
    else:
        page = ec.list_edits(args.page_size)
        edits, total, more = list(page.edits), page.total, bool(page.next_page_token)
    if args.json:
        print_json([edit_json(e) for e in edits])
    elif edits:
        print(edit_table(edits))
    else:
        print(f"no edits in namespace {ec.namespace!r}", file=sys.stderr)
    if more:
        print(f"showing {len(edits)} of {total} edits; --all lists every page", file=sys.stderr)


def run_show(ec: EditcacheClient, args: argparse.Namespace) -> None:
    edit = ec.get_edit(args.id)
    if args.json:
        print_json(edit_json(edit))
    else:
        print(edit_text(edit))


def run_delete(ec: EditcacheClient, args: argparse.Namespace) -> None:
    edit = ec.delete_edit(args.id)
    restored = edit.supersedes if not edit.superseded_by else ""  # a live edit's predecessor answers again
    if args.json:
        print_json({"deleted": edit_json(edit), "restored": restored or None})
    else:
        print(f"deleted {edit.id} ({shown(edit.subject)}: {edit_summary(edit)})")
        if restored:
            print(f"restored {restored}, the edit it had superseded")


def read_specs(path: Path) -> list[EditInput]:
    """Edits from a JSON-lines file ('-' reads stdin); blank lines are skipped."""
    name = "<stdin>" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
    specs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            specs.append(_spec_from_json(line, f"{name}:{number}"))
    if not specs:
        raise InputError(f"{name}: no edits (expected one JSON object per line)")
    return specs


def _spec_from_json(line: str, where: str) -> EditInput:
    """One line of an `add --file`: the same JSON form as `import --format jsonl` reads (client/bulk.py)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON: {exc.msg}") from None
    try:
        return edit_from_json(obj)
    except ValueError as exc:  # names the field and what it must be
        raise InputError(f"{where}: {exc}") from None
