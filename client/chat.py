"""`editctl chat`: an interactive chat in which the user corrects the model, over the Chat and Correct RPCs.

    you> Where is the Space Needle?
    The Space Needle is located in the Pacific Ocean.
    you> /correct No, the Space Needle is in Seattle
    corrected: Space Needle: The Space Needle is located in → Seattle  (edit 5c1f…; /undo takes it back)
    you> Where is the Space Needle?
    The Space Needle is located in Seattle.

A correction is an edit in the namespace: it holds from the next turn, for this namespace only, and
`/undo` deletes it. Commands are listed in HELP.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from client.argtypes import non_negative
from client.client import EditcacheClient
from client.errors import EditcacheError
from client.output import edit_summary, print_dim, shown
from client.records import ChatResult, ChatTurn, EditRecord, GenerationOptions

PROMPT = "you> "
HELP = """\
/correct TEXT   correct the last answer in your words, e.g. /correct No, it is in Seattle
/undo           delete the last correction made in this chat
/edits          list the namespace's edits (* marks this chat's corrections)
/route          how the last answer was produced: route, edit, gate score, timings
/reset          forget the conversation so far (corrections stay)
/help           this list
/quit           leave (Ctrl-D also does)"""
MAX_LISTED_EDITS = 50


@dataclass
class Exchange:
    question: str
    reply: str
    edit_id: str | None = None  # the edit the reply came from


@dataclass
class ChatSession:
    """One chat's state: the exchanges sent as context, the last answer, and the corrections made here."""

    client: EditcacheClient
    context_exchanges: int = 3  # earlier exchanges sent with each question
    system: str | None = None
    options: GenerationOptions = GenerationOptions()
    history: list[Exchange] = field(default_factory=list)
    last: ChatResult | None = None
    corrections: list[EditRecord] = field(default_factory=list)

    def ask(self, question: str, write: Callable[[str], None]) -> ChatResult:
        """Streams the reply through `write` and remembers the exchange."""
        recent = self.history[-self.context_exchanges:] if self.context_exchanges else []
        turns = [ChatTurn("system", self.system)] if self.system else []
        for exchange in recent:
            turns += [ChatTurn("user", exchange.question), ChatTurn("assistant", exchange.reply)]
        turns.append(ChatTurn("user", question))
        with self.client.chat(turns, options=self.options) as stream:
            for delta in stream:
                write(delta)
        assert stream.result is not None  # iteration raises when the final message is missing
        self.last = stream.result
        self.history.append(Exchange(question, stream.result.reply, stream.result.edit_id))
        return stream.result

    def correct(self, text: str) -> EditRecord:
        """Stores the correction of the last answer. The corrected exchange leaves the context: measured on
        Gemma-3-270M, a wrong answer left in the transcript is repeated even when the edit answers."""
        if not self.history:
            raise UsageError("nothing to correct yet: ask a question first")
        exchange = self.history[-1]
        correction = self.client.correct(exchange.question, exchange.reply, text)
        self.corrections.append(correction.edit)
        self.history.pop()
        return correction.edit

    def undo(self) -> EditRecord:
        """Deletes the last correction; the replies it gave leave the context, as the reply it corrected did."""
        if not self.corrections:
            raise UsageError("no correction to undo in this chat")
        edit = self.client.delete_edit(self.corrections[-1].id)
        self.corrections.pop()
        self.history = [e for e in self.history if e.edit_id != edit.id]
        return edit

    def edits(self) -> tuple[list[EditRecord], int]:
        """Up to MAX_LISTED_EDITS of the namespace's edits, oldest first, and how many there are in all."""
        page = self.client.list_edits(MAX_LISTED_EDITS)
        return list(page.edits), page.total

    def reset(self) -> None:
        self.history.clear()
        self.last = None


class UsageError(Exception):
    """A command that cannot run now; the chat goes on."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", type=non_negative(int), default=3, metavar="N",
                        help="earlier exchanges sent with each question (default %(default)s; 0: none)")
    parser.add_argument("--system", metavar="TEXT", help="a system turn opening the conversation")
    parser.add_argument("--max-new-tokens", type=non_negative(int), default=0, metavar="N",
                        help="0 means the server default")
    parser.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 means greedy decoding")
    parser.add_argument("--history-file", type=Path, default=Path.home() / ".editcache_chat_history",
                        metavar="PATH", help="readline history of what you typed (default %(default)s)")


def run(client: EditcacheClient, args: argparse.Namespace) -> None:
    """The `editctl chat` subcommand: a read-eval-print loop until /quit or end of input."""
    options = GenerationOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    session = ChatSession(client, args.context, args.system, options)
    history = _History(args.history_file)
    info = client.server_info()
    print(f"chatting with {info.model} in namespace {client.namespace!r}; /help lists commands, Ctrl-D quits")
    try:
        repl(session, _read_line, sys.stdout)
    finally:
        history.save()


def repl(session: ChatSession, read_line: Callable[[str], str], out: TextIO) -> None:
    while True:
        try:
            line = read_line(PROMPT).strip()
        except EOFError:
            print(file=out)
            return
        except KeyboardInterrupt:  # as in a shell: a fresh prompt
            print(file=out)
            continue
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not command(session, line, out):
                    return
            else:
                answer(session, line, out)
        except UsageError as exc:
            print(exc, file=out)
        except EditcacheError as exc:
            print(f"error: {exc}", file=out)
        except KeyboardInterrupt:
            print("\n(interrupted)", file=out)


def answer(session: ChatSession, question: str, out: TextIO) -> None:
    def write(delta: str) -> None:
        out.write(delta)
        out.flush()

    result = session.ask(question, write)
    print(file=out)
    if result.edit is not None:
        print_dim(f"(answered from edit {result.edit.id[:8]}: {_describe(result.edit)})", out)


def command(session: ChatSession, line: str, out: TextIO) -> bool:
    """Runs one /command; False to leave the chat."""
    name, _, rest = line.partition(" ")
    rest = rest.strip()
    if name in ("/quit", "/exit"):
        return False
    if name == "/help":
        print(HELP, file=out)
    elif name == "/correct":
        if not rest:
            raise UsageError("say what is right, e.g. /correct No, it is in Seattle")
        edit = session.correct(rest)
        print(f"corrected: {shown(edit.subject)}: {_describe(edit)}  (edit {edit.id[:8]}; /undo takes it back)",
              file=out)
    elif name == "/undo":
        edit = session.undo()
        print(f"undone: {shown(edit.subject)}: {_describe(edit)}  (edit {edit.id[:8]} deleted)", file=out)
    elif name == "/edits":
        edits, total = session.edits()
        mine = {e.id for e in session.corrections}
        for edit in edits:
            mark = "*" if edit.id in mine else " "
            print(f"{mark} {edit.id[:8]}  {shown(edit.subject)}: {_describe(edit)}", file=out)
        more = f"; showing the first {len(edits)} (editctl list --all shows all)" if total > len(edits) else ""
        print(f"{total} edit(s) in namespace {session.client.namespace!r}{more}", file=out)
    elif name == "/route":
        print(route_summary(session.last), file=out)
    elif name == "/reset":
        session.reset()
        print("conversation forgotten; corrections stay in force", file=out)
    else:
        raise UsageError(f"unknown command {name}; /help lists them")
    return True


def route_summary(result: ChatResult | None) -> str:
    if result is None:
        return "no answer yet"
    g = result.generation
    abstained = " (the counterfactual model abstained)" if g.abstained else ""
    lines = [f"route={g.route}{abstained} score={g.gate_score:.2f} tokens={len(g.token_ids)} finish={g.finish_reason} "
             f"total={g.timings_ms.get('total', 0.0):.0f}ms"]
    if result.edit is not None:
        lines.append(f"edit {result.edit.id}: {shown(result.edit.subject)}: {_describe(result.edit)}")
    lines.append(f"gate scored: {result.gate_query!r}")
    return "\n".join(lines)


def _describe(edit: EditRecord) -> str:
    return edit_summary(edit)


def _read_line(prompt: str) -> str:
    return input(prompt)


class _History:
    """Readline history of typed lines, kept in a file between chats (when the platform has readline)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            import readline  # importing it gives input() line editing and history
        except ImportError:
            self._readline: Any = None
            return
        self._readline = readline
        readline.set_history_length(1000)
        if path.exists():
            with contextlib.suppress(OSError):  # an unreadable history is no reason not to chat
                readline.read_history_file(path)

    def save(self) -> None:
        if self._readline is not None:
            with contextlib.suppress(OSError):
                self._readline.write_history_file(self._path)
