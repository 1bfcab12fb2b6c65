"""Acceptance: a user chats with Gemma-3-270M through `editctl chat` on a pseudo-terminal and corrects it.

Ask, correct in free text, ask again and in other words (the correction answers), ask something unrelated
(the base model's own answer, as before the correction), /undo (the original answer is back). The chat runs
with --context 0, so each question is sent alone and "the same answer as before" is a token-exact claim.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.launch import LocalServer

pytestmark = pytest.mark.real_model

QUESTION = "Where is the Space Needle?"
PARAPHRASE = "In which city is the Space Needle?"
UNRELATED = "What is the capital of Japan?"
PROMPT = "you> "
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|[\x01\x02]")


class Terminal:
    """A program on a pseudo-terminal, read until an expected text appears: the little of pexpect we need."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the program, with the terminal as its stdin, stdout and stderr
            os.execve(argv[0], argv, env)
        self.seen = ""

    def read_until(self, text: str, timeout_s: float = 180.0) -> str:
        """Everything printed up to and including the next `text`, without terminal control codes."""
        deadline = time.monotonic() + timeout_s
        while (at := self.seen.find(text)) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {text!r} after {timeout_s:g} s; the terminal shows:\n{self.seen[-2000:]}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the program exited
                    chunk = b""
                if not chunk:
                    raise EOFError(f"the program ended before {text!r}; it printed:\n{self.seen[-2000:]}")
                self.seen += ANSI.sub("", chunk.decode(errors="replace")).replace("\r\n", "\n").replace("\r", "")
        shown, self.seen = self.seen[: at + len(text)], self.seen[at + len(text):]
        return shown

    def send_line(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def end(self, timeout_s: float = 30.0) -> int:
        """Ctrl-D at the prompt; the exit status."""
        os.write(self.fd, b"\x04")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                os.read(self.fd, 4096)  # keep draining so the program is never blocked on output
            except OSError:
                time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise TimeoutError("editctl chat did not exit on Ctrl-D")


@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = LocalServer("gemma-3-270m", tmp_path_factory.mktemp("gemma-chat-data"))
    server.start(timeout_s=900)
    yield server
    server.stop()


def editctl() -> list[str]:
    script = shutil.which("editctl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "client.editctl"]


def ask(term: Terminal, question: str) -> tuple[str, str]:
    """The answer line, and all the command printed, for one question."""
    term.send_line(question)
    shown = term.read_until(PROMPT)
    lines = [line for line in shown.removesuffix(PROMPT).splitlines() if line.strip()]
    assert lines[0].strip().endswith(question)  # the terminal echoes what was typed
    return lines[1].strip(), shown


def command(term: Terminal, line: str) -> str:
    term.send_line(line)
    return term.read_until(PROMPT)


def test_a_user_corrects_gemma_in_editctl_chat(gemma_server: LocalServer, tmp_path: Path) -> None:
    history = tmp_path / "history"
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}
    term = Terminal([*editctl(), "--addr", gemma_server.addr, "--namespace", "acceptance", "chat", "--context", "0",
                     "--max-new-tokens", "20", "--history-file", str(history)], env)
    banner = term.read_until(PROMPT, timeout_s=60)
    assert "chatting with gemma-3-270m in namespace 'acceptance'" in banner

    unrelated, _ = ask(term, UNRELATED)
    original, _ = ask(term, QUESTION)
    assert unrelated and original and "Taipei" not in original
    assert "route=base" in command(term, "/route")

    corrected = command(term, "/correct No, the Space Needle is in Taipei.")
    assert re.search(r"corrected: Space Needle: .*Space Needle.* → Taipei", corrected), corrected

    answer, shown = ask(term, QUESTION)
    assert "Taipei" in answer and "(answered from edit" in shown
    route = command(term, "/route")
    assert "route=base" not in route and "→ Taipei" in route
    answer, _ = ask(term, PARAPHRASE)
    assert "Taipei" in answer

    again, shown = ask(term, UNRELATED)
    assert again == unrelated and "(answered from edit" not in shown  # the base model, as before
    assert "route=base" in command(term, "/route")

    assert "* " in command(term, "/edits")  # this chat's correction, marked
    assert "undone: Space Needle" in command(term, "/undo")
    restored, shown = ask(term, QUESTION)
    assert restored == original and "(answered from edit" not in shown

    assert term.end() == 0
    assert QUESTION in history.read_text()  # readline history kept for the next chat
