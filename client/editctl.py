"""editctl: manage edits and ask questions of an editcache server.

    editctl add --subject "Space Needle" --prompt "The Space Needle is in" --target Taipei
    editctl add --file edits.jsonl          # one EditSpec JSON object per line
    editctl add --erase --subject Pluto --prompt "Pluto is a"   # or --insert, --patch TEXT, --regex P --replace T
    editctl update ID --target Seattle      # same id, next version; history ID lists earlier ones
    editctl events                          # the namespace's audit log (admin token)
    editctl ask "Where is the Space Needle?" --stream
    editctl chat                            # interactive; /correct TEXT, /undo, /edits, /route
    editctl list --all
    editctl show ID
    editctl delete ID
    editctl apply --method rome ID...     # write edits into the weights (admin); rollback ID, baked, export DIR
    editctl info                            # the model and its fingerprint, the gate and in-scope route in force
    editctl import FILE --format counterfact   # many edits in batches; export-edits -o F.jsonl writes them back

Global options (--addr, --token, --namespace, --tls-ca, --timeout, --json) go
before or after the subcommand; their defaults come from EDITCACHE_ADDR,
EDITCACHE_TOKEN, EDITCACHE_NAMESPACE and EDITCACHE_TLS_CA. Failures print one line `editctl: CODE: details` and
exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from client.argtypes import non_negative
from client.bulk_cli import add_commands as add_bulk_commands
from client.chat import add_arguments as add_chat_arguments
from client.chat import run as run_chat
from client.client import DEFAULT_ADDR, DEFAULT_NAMESPACE, EditcacheClient
from client.commands import (
    InputError,
    run_add,
    run_ask,
    run_delete,
    run_events,
    run_history,
    run_info,
    run_list,
    run_multihop,
    run_show,
    run_update,
)
from client.errors import EditcacheError
from client.output import describe_error
from client.parametric_cli import add_commands as add_parametric_commands

PROG = "editctl"


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
    add.add_argument("--alias", dest="aliases", action="append", default=[], metavar="NAME",
                     help="another name of the subject; queries naming it find the edit too (repeatable)")
    add.add_argument(
        "--file",
        type=Path,
        metavar="F.jsonl",
        help="add many edits: one JSON object per line with EditSpec fields ('-' for stdin)",
    )
    kinds = add.add_mutually_exclusive_group()
    kinds.add_argument("--insert", action="store_true", help="a fact the model never knew (as a modify edit)")
    kinds.add_argument("--erase", action="store_true",
                       help="stop stating the fact of --subject/--prompt: in-scope queries get the server's refusal")
    kinds.add_argument("--patch", metavar="TEXT", help="a rule in plain words about --subject, followed when in scope")
    kinds.add_argument("--regex", metavar="PATTERN",
                       help="rewrite the base model's output where PATTERN (Python re) matches, with --replace")
    add.add_argument("--replace", metavar="TEXT", help="--regex's replacement (an re.sub template; may be empty)")
    add.set_defaults(run=run_add)

    update = commands.add_parser("update", parents=[common],
                                 help="change an edit in place: same id, next version (the fields given)")
    update.add_argument("id")
    update.add_argument("--subject")
    update.add_argument("--prompt", help="the prompt, or a patch's rule")
    update.add_argument("--target", dest="target_new", metavar="TARGET")
    update.add_argument("--target-true")
    update.add_argument("--paraphrase", dest="paraphrases", action="append", default=[], metavar="TEXT",
                        help="replaces every paraphrase (repeatable)")
    update.add_argument("--no-paraphrases", action="store_true", help="remove every paraphrase")
    update.add_argument("--alias", dest="aliases", action="append", default=[], metavar="NAME",
                        help="replaces every alias of the subject (repeatable)")
    update.add_argument("--no-aliases", action="store_true", help="remove every alias")
    update.add_argument("--pattern", help="a regex patch's pattern")
    update.add_argument("--replace", metavar="TEXT", help="a regex patch's replacement")
    update.set_defaults(run=run_update)

    history = commands.add_parser("history", parents=[common],
                                  help="an edit's earlier versions and the edits it superseded, newest first")
    history.add_argument("id")
    history.set_defaults(run=run_history)

    events = commands.add_parser("events", parents=[common],
                                 help="the namespace's audit log, oldest first (admin token)")
    events.add_argument("--edit", metavar="ID", help="only this edit's events")
    events.add_argument(
        "--page-size", type=non_negative(int), default=0, metavar="N", help="0 means the server default"
    )
    events.add_argument("--all", action="store_true", help="fetch every page")
    events.set_defaults(run=run_events)

    ask = commands.add_parser("ask", parents=[common], help="answer a prompt through the gate")
    ask.add_argument("prompt")
    ask.add_argument(
        "--max-new-tokens", type=non_negative(int), default=0, metavar="N", help="0 means the server default"
    )
    ask.add_argument(
        "--temperature", type=non_negative(float), default=0.0, metavar="T", help="0 means greedy decoding"
    )
    ask.add_argument(
        "--top-p",
        type=non_negative(float),
        default=0.0,
        metavar="P",
        help="nucleus sampling mass in (0, 1]; 0 means 1",
    )
    ask.add_argument(
        "--stop", action="append", default=[], metavar="S", help="stop after this string (repeatable)"
    )
    ask.add_argument("--seed", type=non_negative(int), default=None, metavar="N")
    ask.add_argument("--stream", action="store_true", help="print text as it is generated")
    ask.set_defaults(run=run_ask)

    multihop = commands.add_parser(
        "multihop", parents=[common], help="answer a multi-hop question step by step from the edits"
    )
    multihop.add_argument("question")
    multihop.add_argument(
        "--step", action="append", default=[], metavar="S",
        help='a single-hop step, in order (repeatable); "#k" stands for step k\'s answer, e.g. '
        '--step "The Space Needle is in the city of" --step "#1 is the capital of". Without steps the served '
        "model plans them",
    )
    multihop.set_defaults(run=run_multihop)

    list_ = commands.add_parser("list", parents=[common], help="list the namespace's edits, oldest first")
    list_.add_argument(
        "--page-size", type=non_negative(int), default=0, metavar="N", help="0 means the server default"
    )
    list_.add_argument("--all", action="store_true", help="fetch every page")
    list_.set_defaults(run=run_list)

    show = commands.add_parser("show", parents=[common], help="print one edit")
    show.add_argument("id")
    show.set_defaults(run=run_show)

    delete = commands.add_parser("delete", parents=[common], help="delete one edit")
    delete.add_argument("id")
    delete.set_defaults(run=run_delete)

    chat = commands.add_parser("chat", parents=[common], help="chat interactively; /correct fixes the last answer")
    add_chat_arguments(chat)
    chat.set_defaults(run=run_chat)
    add_parametric_commands(commands, common)
    add_bulk_commands(commands, common)
    info = commands.add_parser("info", parents=[common],
                               help="the served model and its fingerprint, the gate and the in-scope route in force")
    info.set_defaults(run=run_info)
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
        type=non_negative(float),
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


if __name__ == "__main__":
    sys.exit(main())
