"""editctl's bulk commands: import (a benchmark or JSON-lines file of edits, in batches) and export-edits.

The reading, checking and batching are client/bulk.py's; here are the arguments, the progress bar and the output.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from client.argtypes import non_negative
from client.bulk import (
    IMPORT_FORMATS,
    JSONL,
    ImportResult,
    Refusal,
    SourceError,
    batches,
    export_lines,
    read_source,
    send,
)
from client.client import EditcacheClient
from client.commands import InputError
from client.errors import EditcacheError
from client.output import print_json
from client.records import EditRecord

DEFAULT_BATCH_SIZE = 500  # edits per AddEdits; the server's default limit is 1000


def add_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    import_ = commands.add_parser(
        "import", parents=[common], help="add the edits of a benchmark or JSON-lines file, in batches")
    import_.add_argument("file", type=Path, metavar="FILE")
    import_.add_argument("--format", required=True, choices=IMPORT_FORMATS,
                         help="a benchmark's JSON list (as `editctl eval` reads it), or jsonl as export-edits writes")
    import_.add_argument("--batch-size", type=non_negative(int), default=DEFAULT_BATCH_SIZE, metavar="N",
                         help="edits per request (default %(default)s)")
    import_.add_argument("--skip-supersede", action="store_true",
                         help="store every record as a new edit, deciding nothing about superseding: for a file "
                              "export-edits wrote, whose edits were all live together (an exact, faster round trip)")
    import_.set_defaults(run=run_import)

    export = commands.add_parser(
        "export-edits", parents=[common], help="write the namespace's edits as JSON lines that `import` reads back")
    export.add_argument("--format", choices=(JSONL,), default=JSONL)
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: standard output")
    export.add_argument("--page-size", type=non_negative(int), default=0, metavar="N",
                        help="edits per ListEdits call; 0 means the server default")
    export.set_defaults(run=run_export)


def run_import(ec: EditcacheClient, args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise InputError("import: --batch-size must be at least 1")
    try:
        records, refused = read_source(args.file, args.format)
    except SourceError as exc:
        raise InputError(f"import: {exc}") from None
    in_file = len(records) + len(refused)
    result = ImportResult(refused=refused)
    total = sum(len(record.edits) for record in records)
    with tqdm(total=total, desc="import", unit="edit", file=sys.stderr, disable=None) as bar:
        for batch in batches(records, args.batch_size):
            try:
                send(batch, lambda edits: ec.add_edits(edits, skip_supersede=args.skip_supersede), result)
            except EditcacheError:
                _report(result, args, stream=sys.stderr)
                print(f"import stopped: {args.file}:{batch[0].line} (record {batch[0].index}) and the records "
                      "after it were not all sent", file=sys.stderr)
                raise
            bar.update(sum(len(record.edits) for record in batch))
    _report(result, args, stream=sys.stdout)
    if result.refused:
        where = "see refused" if args.json else "listed above"
        raise InputError(f"import: {len(result.refused)} of {in_file} records refused ({where}); "
                         "the others went in")


def _report(result: ImportResult, args: argparse.Namespace, *, stream: TextIO) -> None:
    refused = sorted(result.refused, key=lambda r: r.index)
    if args.json:
        print_json({"namespace": args.namespace, "added": result.added, "records_added": result.records_added,
                    "superseding": result.superseding,
                    "refused": [_refusal_json(r) for r in refused],
                    "fallbacks": [dataclasses.asdict(f) for f in result.fallbacks]})
        return
    for refusal in refused:
        print(f"{args.file}:{refusal.line}: {refusal.reason}", file=sys.stderr)
    for f in result.fallbacks:
        print(f"{args.file}:{f.first_line}-{f.last_line}: the server refused this batch of {f.records} records; "
              f"resent it in halves ({f.requests} requests)", file=sys.stderr)
    replaced = f" ({result.superseding} replaced an edit of the same fact)" if result.superseding else ""
    print(f"added {result.added} edits from {result.records_added} records to namespace {args.namespace!r}{replaced}; "
          f"refused {len(refused)} records", file=stream)


def _refusal_json(refusal: Refusal) -> dict[str, object]:
    return {"line": refusal.line, "record": refusal.index, "reason": refusal.reason}


def run_export(ec: EditcacheClient, args: argparse.Namespace) -> None:
    edits = ec.iter_edits(args.page_size)
    if args.output is None:
        count = _write(edits, sys.stdout)
    else:
        # Written beside the file and renamed, so that a failed export leaves no half file under the name.
        partial = args.output.with_name(args.output.name + ".partial")
        try:
            with open(partial, "w", encoding="utf-8") as out:
                count = _write(edits, out)
            os.replace(partial, args.output)
        except OSError as exc:
            raise InputError(f"export-edits: cannot write {args.output}: {exc.strerror}") from None
        finally:
            partial.unlink(missing_ok=True)
    if args.json and args.output is not None:
        print_json({"namespace": args.namespace, "exported": count, "file": str(args.output)})
    elif not args.json:
        print(f"exported {count} edits from namespace {args.namespace!r}"
              + (f" to {args.output}" if args.output else ""), file=sys.stderr if args.output is None else sys.stdout)


def _write(edits: Iterable[EditRecord], out: TextIO) -> int:
    count = 0
    for line in export_lines(edits):
        out.write(line + "\n")
        count += 1
    return count
