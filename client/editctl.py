"""editctl: manage edits and ask questions of an editcache server.

    editctl add --subject "Space Needle" --prompt "The Space Needle is in" --target Taipei
    editctl add --file edits.jsonl          # one EditSpec JSON object per line
    editctl ask "Where is the Space Needle?" --stream
    editctl chat                            # interactive; /correct TEXT, /undo, /edits, /route
    editctl list --all
    editctl show ID
    editctl delete ID
    editctl apply --method rome ID...     # write edits into the weights (admin); rollback ID, baked, export DIR
    editctl info                            # the model and its fingerprint, the gate and in-scope route in force

Global options (--addr, --token, --namespace, --tls-ca, --timeout, --json) go
before or after the subcommand; their defaults come from EDITCACHE_ADDR,
EDITCACHE_TOKEN, EDITCACHE_NAMESPACE and EDITCACHE_TLS_CA. Failures print one line `editctl: CODE: details` and
exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from client.chat import add_arguments as add_chat_arguments
from client.chat import run as run_chat
from client.client import (
    DEFAULT_ADDR,
    DEFAULT_NAMESPACE,
    EditcacheClient,
    EditInput,
    EditRecord,
    GenerationResult,
    ServerInfo,
)
from client.errors import EditcacheError
from client.parametric_cli import add_commands as add_parametric_commands

PROG = "editctl"
_SPEC_FIELDS = ("subject", "prompt", "target_new", "target_true", "paraphrases")
_HINTS = {
    "UNAUTHENTICATED": "pass --token or set EDITCACHE_TOKEN",
    "PERMISSION_DENIED": "the token does not grant this namespace; check --namespace",
    "DEADLINE_EXCEEDED": "raise --timeout (seconds; 0 means no deadline)",
}


class InputError(Exception):
    """A bad input file or argument combination: exit code 2."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(os.environ)
    try:
        if (eval_argv := _eval_arguments(argv, os.environ)) is not None:
            # The evaluation harness has its own options (scripts/evaluate.py).
            from client.evaluation.cli import main as evaluate

            return evaluate(eval_argv, prog=f"{PROG} eval")
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage (code 2) or help (code 0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with EditcacheClient(
            args.addr, namespace=args.namespace, token=args.token or None, timeout_s=args.timeout or None,
            tls_ca=args.tls_ca or None,
        ) as ec:
            args.run(ec, args)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except EditcacheError as exc:
        print(f"{PROG}: {describe_error(exc, args.addr)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


_VALUED_GLOBALS = ("--addr", "--token", "--namespace", "--tls-ca", "--timeout")


def _eval_arguments(argv: Sequence[str], env: Mapping[str, str]) -> list[str] | None:
    """eval's own arguments, with --addr and --token given before `eval` passed on; None for other commands.

    --json before `eval` changes nothing: eval's last line of stdout is always its JSON summary. The other
    global options do not apply to it, and are refused.
    """
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _VALUED_GLOBALS else 1  # --opt=value, a flag, or an unknown option argparse names
    if argv[i:i + 1] != ["eval"]:
        return None
    before = argparse.ArgumentParser(prog=PROG)
    _add_global_options(before, env, defaults=False)
    given = vars(before.parse_args(argv[:i]))
    if unused := sorted(set(given) - {"addr", "token", "json"}):
        before.error(f"eval does not use {', '.join('--' + k.replace('_', '-') for k in unused)}; "
                     "it evaluates in namespaces of its own (see `editctl eval --help`)")
    return [*(f"--{key}={given[key]}" for key in ("addr", "token") if given.get(key)), *argv[i + 1:]]


def describe_error(exc: EditcacheError, addr: str) -> str:
    """One line, `CODE: details`, with a hint where one helps."""
    code = exc.code.name
    details = " ".join(exc.details.split()) or "(no details)"
    if code == "UNAVAILABLE":
        if _looks_like_connection_failure(details):
            return (
                f"{code}: cannot reach the server at {addr} ({details}); "
                "is it running? Start one with `make serve`"
            )
        return f"{code}: server at {addr}: {details}"
    hint = _HINTS.get(code)
    return f"{code}: {details} ({hint})" if hint else f"{code}: {details}"


def _looks_like_connection_failure(details: str) -> bool:
    lowered = details.lower()
    return any(s in lowered for s in ("connect", "dns resolution", "unreachable", "no route"))


# --- arguments -------------------------------------------------------------


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage edits and ask questions of an editcache server.",
    )
    _add_global_options(parser, env, defaults=True)
    # The same options after the subcommand; SUPPRESS keeps the values given before it.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, env, defaults=False)

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add = commands.add_parser("add", parents=[common], help="register one edit, or many from a file")
    add.add_argument("--subject", help="the entity the fact is about; must occur in the prompt")
    add.add_argument("--prompt", help="a cloze or question whose answer the edit sets")
    add.add_argument("--target", dest="target_new", metavar="TARGET", help="the new answer")
    add.add_argument("--target-true", help="the answer before the edit, when known")
    add.add_argument(
        "--paraphrase",
        dest="paraphrases",
        action="append",
        default=[],
        metavar="TEXT",
        help="another wording of the prompt (repeatable)",
    )
    add.add_argument(
        "--file",
        type=Path,
        metavar="F.jsonl",
        help="add many edits: one JSON object per line with EditSpec fields ('-' for stdin)",
    )
    add.set_defaults(run=_run_add)

    ask = commands.add_parser("ask", parents=[common], help="answer a prompt through the gate")
    ask.add_argument("prompt")
    ask.add_argument(
        "--max-new-tokens", type=_non_negative(int), default=0, metavar="N", help="0 means the server default"
    )
    ask.add_argument(
        "--temperature", type=_non_negative(float), default=0.0, metavar="T", help="0 means greedy decoding"
    )
    ask.add_argument(
        "--top-p",
        type=_non_negative(float),
        default=0.0,
        metavar="P",
        help="nucleus sampling mass in (0, 1]; 0 means 1",
    )
    ask.add_argument(
        "--stop", action="append", default=[], metavar="S", help="stop after this string (repeatable)"
    )
    ask.add_argument("--seed", type=_non_negative(int), default=None, metavar="N")
    ask.add_argument("--stream", action="store_true", help="print text as it is generated")
    ask.set_defaults(run=_run_ask)

    list_ = commands.add_parser("list", parents=[common], help="list the namespace's edits, oldest first")
    list_.add_argument(
        "--page-size", type=_non_negative(int), default=0, metavar="N", help="0 means the server default"
    )
    list_.add_argument("--all", action="store_true", help="fetch every page")
    list_.set_defaults(run=_run_list)

    show = commands.add_parser("show", parents=[common], help="print one edit")
    show.add_argument("id")
    show.set_defaults(run=_run_show)

    delete = commands.add_parser("delete", parents=[common], help="delete one edit")
    delete.add_argument("id")
    delete.set_defaults(run=_run_delete)

    chat = commands.add_parser("chat", parents=[common], help="chat interactively; /correct fixes the last answer")
    add_chat_arguments(chat)
    chat.set_defaults(run=run_chat)
    add_parametric_commands(commands, common)
    info = commands.add_parser("info", parents=[common],
                               help="the served model and its fingerprint, the gate and the in-scope route in force")
    info.set_defaults(run=_run_info)
    # Listed for --help; main() hands `eval` and what follows it to the evaluation harness.
    commands.add_parser("eval", help="evaluate an editing method on a benchmark file (see `editctl eval --help`)")
    return parser


def _add_global_options(parser: argparse.ArgumentParser, env: Mapping[str, str], *, defaults: bool) -> None:
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--addr",
        default=default(env.get("EDITCACHE_ADDR") or DEFAULT_ADDR),
        metavar="HOST:PORT",
        help="server address (env EDITCACHE_ADDR; default %(default)s)" if defaults else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--token",
        default=default(env.get("EDITCACHE_TOKEN")),
        metavar="T",
        help="bearer token for the namespace (env EDITCACHE_TOKEN)" if defaults else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--namespace",
        default=default(env.get("EDITCACHE_NAMESPACE") or DEFAULT_NAMESPACE),
        metavar="NS",
        help="namespace to act in (env EDITCACHE_NAMESPACE; default %(default)s)"
        if defaults
        else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--tls-ca",
        default=default(env.get("EDITCACHE_TLS_CA")),
        metavar="PEM",
        help="connect with TLS, trusting this CA or server certificate (env EDITCACHE_TLS_CA)"
        if defaults
        else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--timeout",
        type=_non_negative(float),
        default=default(120.0),
        metavar="SECONDS",
        help="deadline of each call; 0 means none (default %(default)s)" if defaults else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON for scripts" if defaults else argparse.SUPPRESS,
    )


def _non_negative(kind: Callable[[str], int | float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# --- subcommands -----------------------------------------------------------


def _run_add(ec: EditcacheClient, args: argparse.Namespace) -> None:
    one = (args.subject, args.prompt, args.target_new)
    if args.file is not None:
        if any(v is not None for v in (*one, args.target_true)) or args.paraphrases:
            raise InputError("add: give either --file or --subject/--prompt/--target, not both")
        records = ec.add_edits(read_specs(args.file))
        if args.json:
            _print_json({"ids": [r.id for r in records]})
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
        _print_json({"id": record.id})
    else:
        print(record.id)


def _run_ask(ec: EditcacheClient, args: argparse.Namespace) -> None:
    options: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "stop": args.stop,
        "seed": args.seed,
    }
    if args.stream:
        stream = ec.stream(args.prompt, **options)
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
        result = ec.generate(args.prompt, **options)
        if not args.json:
            print(result.text)
    if args.json:
        _print_json(result_json(result))
    else:
        _print_dim(summary_line(result), sys.stderr)


def _run_info(ec: EditcacheClient, args: argparse.Namespace) -> None:
    info = ec.server_info()
    if args.json:
        _print_json(dataclasses.asdict(info))
        return
    print(info_text(info))


def info_text(info: ServerInfo) -> str:
    rows = [
        ("model", f"{info.model} ({info.model_type}, {info.parameters / 1e6:.0f}M parameters)"),
        ("fingerprint", info.model_fingerprint),
        ("gate", f"{info.gate} (threshold {info.threshold:.3f}, top-k {info.top_k}, encoder {info.encoder})"),
        ("in-scope route", info.in_scope_route),
        ("routes", ", ".join(info.routes)),
        ("version", info.version),
        *(("degraded", sentence) for sentence in info.degraded),
    ]
    return "\n".join(f"{name:<15}{value}" for name, value in rows)


def _run_list(ec: EditcacheClient, args: argparse.Namespace) -> None:
    if args.all:
        edits = list(ec.iter_edits(args.page_size))
        total, more = len(edits), False
    else:
        page = ec.list_edits(args.page_size)
        edits, total, more = list(page.edits), page.total, bool(page.next_page_token)
    if args.json:
        _print_json([edit_json(e) for e in edits])
    elif edits:
        print(edit_table(edits))
    else:
        print(f"no edits in namespace {ec.namespace!r}", file=sys.stderr)
    if more:
        print(f"showing {len(edits)} of {total} edits; --all lists every page", file=sys.stderr)


def _run_show(ec: EditcacheClient, args: argparse.Namespace) -> None:
    edit = ec.get_edit(args.id)
    if args.json:
        _print_json(edit_json(edit))
        return
    rows = [
        ("id", edit.id),
        ("namespace", edit.namespace),
        ("subject", edit.subject),
        ("prompt", edit.prompt),
        ("target_new", edit.target_new),
        ("target_true", edit.target_true if edit.target_true is not None else "-"),
        ("created", datetime.fromtimestamp(edit.created_at_unix_s, UTC).isoformat(timespec="seconds")),
    ]
    rows += [("paraphrase", p) for p in edit.paraphrases]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}} {value}")


def _run_delete(ec: EditcacheClient, args: argparse.Namespace) -> None:
    edit = ec.delete_edit(args.id)
    if args.json:
        _print_json({"deleted": edit_json(edit)})
    else:
        print(f"deleted {edit.id} ({edit.subject}: {edit.prompt} → {edit.target_new})")


# --- input and output ------------------------------------------------------


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


def edit_json(edit: EditRecord) -> dict[str, Any]:
    obj = dataclasses.asdict(edit)
    obj["paraphrases"] = list(edit.paraphrases)
    return obj


def result_json(result: GenerationResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "route": result.route,
        "edit_id": result.edit_id,
        "score": result.gate_score,
        "timings_ms": result.timings_ms,
        "token_ids": list(result.token_ids),
        "finish_reason": result.finish_reason,
        "abstained": result.abstained,
    }


def summary_line(result: GenerationResult) -> str:
    parts = [f"route={result.route}"]
    if result.abstained:
        parts.append("abstained")  # the gate let it in; the counterfactual model handed it to the base model
    if result.edit_id:
        parts.append(f"edit={result.edit_id}")
    parts.append(f"score={result.gate_score:.2f}")
    parts.append(f"total={result.timings_ms.get('total', 0.0):.0f}ms")
    return f"[{' '.join(parts)}]"


def edit_table(edits: Sequence[EditRecord]) -> str:
    id_width = max(len("ID"), *(len(e.id) for e in edits))
    subject_width = min(max(len("SUBJECT"), *(len(e.subject) for e in edits)), 30)
    lines = [f"{'ID':<{id_width}}  {'SUBJECT':<{subject_width}}  EDIT"]
    for e in edits:
        lines.append(f"{e.id:<{id_width}}  {e.subject:<{subject_width}}  {e.prompt} → {e.target_new}")
    return "\n".join(lines)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _print_dim(text: str, stream: TextIO) -> None:
    if stream.isatty() and not os.environ.get("NO_COLOR"):
        text = f"\033[2m{text}\033[0m"
    print(text, file=stream)


if __name__ == "__main__":
    sys.exit(main())
