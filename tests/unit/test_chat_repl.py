"""The `editctl chat` loop against a fake client: commands, streaming, what is sent as context."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from client import ChatResult, ChatTurn, Correction, EditPage, EditRecord, FailedPrecondition, GenerationResult
from client.chat import ChatSession, repl


def record(id: str, subject: str = "Space Needle", target: str = "Taipei") -> EditRecord:
    return EditRecord(id, "ns", subject, f"The {subject} is located in", target, None, (), 0.0)


class FakeStream:
    def __init__(self, pieces: list[str], result: ChatResult) -> None:
        self._pieces, self._result = pieces, result
        self.result: ChatResult | None = None

    def __iter__(self) -> Iterator[str]:
        yield from self._pieces
        self.result = self._result

    def __enter__(self) -> FakeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@dataclass
class FakeClient:
    """Answers "Taipei" once a correction is stored, "the Pacific Ocean" before; remembers what it was sent."""

    namespace: str = "ns"
    sent: list[list[ChatTurn]] = field(default_factory=list)
    edits: list[EditRecord] = field(default_factory=list)
    corrected: list[tuple[str, str, str]] = field(default_factory=list)

    def chat(self, turns: Sequence[ChatTurn], **options: Any) -> FakeStream:
        self.sent.append(list(turns))
        edit = self.edits[-1] if self.edits else None
        reply = "It is in Taipei." if edit else "It is in the Pacific Ocean."
        generation = GenerationResult(reply, "ike" if edit else "base", edit.id if edit else None, 0.9 if edit else 0.1,
                                      {"total": 12.0}, (1, 2), "stop")
        return FakeStream(["It is ", reply[6:]], ChatResult(reply, generation, edit, "prompt", turns[-1].content))

    def correct(self, question: str, answer: str, text: str) -> Correction:
        if "wrong" in text:
            raise FailedPrecondition("the correction does not say what the right answer is")
        self.corrected.append((question, answer, text))
        self.edits.append(record(f"{len(self.edits) + 1:032x}"))
        return Correction(self.edits[-1], True, ())

    def delete_edit(self, id: str) -> EditRecord:
        (edit,) = [e for e in self.edits if e.id == id]
        self.edits.remove(edit)
        return edit

    def list_edits(self, page_size: int = 0) -> EditPage:
        return EditPage(tuple(self.edits[:page_size]), "", len(self.edits))


def run(lines: list[str], client: FakeClient | None = None, context: int = 3) -> tuple[str, FakeClient, ChatSession]:
    client = client or FakeClient()
    session = ChatSession(client, context_exchanges=context)  # type: ignore[arg-type]
    feed = iter(lines)

    def read_line(prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    repl(session, read_line, out)
    return out.getvalue(), client, session


def test_a_correction_holds_from_the_next_turn_and_undo_takes_it_back() -> None:
    text, client, session = run(["Where is the Space Needle?", "/correct No, it is in Taipei",
                                 "Where is the Space Needle?", "/route", "/undo", "Where is the Space Needle?"])
    assert text.count("It is in the Pacific Ocean.") == 2 and text.count("It is in Taipei.") == 1
    assert "corrected: Space Needle: The Space Needle is located in → Taipei" in text
    assert "route=ike score=0.90" in text and "gate scored: 'Where is the Space Needle?'" in text
    assert "undone: Space Needle" in text and client.edits == [] and session.corrections == []
    assert client.corrected == [("Where is the Space Needle?", "It is in the Pacific Ocean.", "No, it is in Taipei")]


def test_the_corrected_exchange_leaves_the_context_and_earlier_ones_stay() -> None:
    _, client, _ = run(["Hello", "Where is the Space Needle?", "/correct No, it is in Taipei", "Is it tall?"])
    assert [(t.role, t.content) for t in client.sent[-1]] == [
        ("user", "Hello"), ("assistant", "It is in the Pacific Ocean."), ("user", "Is it tall?")
    ]


def test_undo_takes_the_replies_of_the_correction_out_of_the_context() -> None:
    _, client, _ = run(["Hello", "Where is the Space Needle?", "/correct No, it is in Taipei", "Where is it?", "/undo",
                        "Is it tall?"])
    assert [t.content for t in client.sent[-1]] == ["Hello", "It is in the Pacific Ocean.", "Is it tall?"]


def test_context_is_limited_to_the_last_exchanges() -> None:
    _, client, _ = run(["one", "two", "three"], context=1)
    assert [t.content for t in client.sent[-1]] == ["two", "It is in the Pacific Ocean.", "three"]
    _, client, _ = run(["one", "two"], context=0)
    assert [t.content for t in client.sent[-1]] == ["two"]


def test_commands_that_cannot_run_say_why_and_the_chat_goes_on() -> None:
    text, _, _ = run(["/correct No, it is in Taipei", "/undo", "/route", "/frobnicate", "/correct",
                      "Where is the Space Needle?", "/correct that's wrong", "/edits"])
    assert "nothing to correct yet" in text and "no correction to undo" in text and "no answer yet" in text
    assert "unknown command /frobnicate" in text and "say what is right" in text
    assert "error: FAILED_PRECONDITION: the correction does not say what the right answer is" in text
    assert "0 edit(s) in namespace 'ns'" in text


def test_edits_marks_this_chats_corrections_and_quit_leaves() -> None:
    client = FakeClient(edits=[record("f" * 32, "Eiffel Tower", "Rome")])
    text, _, _ = run(["Where is the Space Needle?", "/correct No, it is in Taipei", "/edits", "/quit", "ignored"],
                     client)
    assert "  ffffffff  Eiffel Tower" in text and "* 00000000  Space Needle" in text
    assert "2 edit(s)" in text and len(client.sent) == 1

