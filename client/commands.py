"""editctl's edit and inference subcommands: add, ask, list, show, delete, info.

Each takes the connected client and the parsed arguments; `chat` lives in chat.py, the parametric
commands in parametric_cli.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from client.client import EditcacheClient
from client.output import (
    edit_json,
    edit_summary,
    edit_table,
    edit_text,
    info_text,
    print_dim,
    print_json,
    result_json,
    shown,
    summary_line,
)
from client.records import EditInput, GenerationOptions

_SPEC_FIELDS = ("subject", "prompt", "target_new", "target_true", "paraphrases")


class InputError(Exception):
    """A bad input file or argument combination: exit code 2."""


def run_add(ec: EditcacheClient, args: argparse.Namespace) -> None:
    one = (args.subject, args.prompt, args.target_new)
    if args.file is not None:
        if any(v is not None for v in (*one, args.target_true)) or args.paraphrases:
            raise InputError("add: give either --file or --subject/--prompt/--target, not both")
        records = ec.add_edits(read_specs(args.file))
        if args.json:
            print_json({"ids": [r.id for r in records]})
        else:
            for record in records:
                print(record.id)
        return
    missing = [flag for flag, v in zip(("--subject", "--prompt", "--target"), one, strict=True) if v is None]
    if missing:
        raise InputError(f"add: missing {', '.join(missing)} (or give --file F.jsonl)")
    record = ec.add_edit(
        args.subject,
        args.prompt,
        args.target_new,
        target_true=args.target_true,
        paraphrases=args.paraphrases,
    )
    if args.json:
        print_json({"id": record.id})
    else:
        print(record.id)


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
    if args.json:
        print_json({"deleted": edit_json(edit)})
    else:
        print(f"deleted {edit.id} ({shown(edit.subject)}: {edit_summary(edit)})")


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
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object with fields {', '.join(_SPEC_FIELDS)}")
    unknown = sorted(set(obj) - set(_SPEC_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(_SPEC_FIELDS)}")
    for key in ("subject", "prompt", "target_new"):
        if not isinstance(obj.get(key), str):
            raise InputError(f"{where}: field {key!r} must be a string")
    if obj.get("target_true") is not None and not isinstance(obj["target_true"], str):
        raise InputError(f"{where}: field 'target_true' must be a string or null")
    paraphrases = obj.get("paraphrases") or []
    if not isinstance(paraphrases, list) or not all(isinstance(p, str) for p in paraphrases):
        raise InputError(f"{where}: field 'paraphrases' must be a list of strings")
    return EditInput(
        obj["subject"], obj["prompt"], obj["target_new"], obj.get("target_true"), tuple(paraphrases)
    )
