"""Conversations as model text: render turns for the model to continue, and recover the reply it writes.

Models with a chat template (SmolLM2-135M-Instruct) get their own template. Base models (Gemma-3-270M)
get a plain transcript, `User: …` / `Assistant: …` lines, after one example exchange. Measured on
Gemma-3-270M: the bare transcript got answers such as "I'm not sure." to plain factual questions, with an
example exchange one-sentence answers ("The Eiffel Tower is in Paris."). The example names no place:
with "The capital of Italy is Rome." as the example, in-scope answers to "In which city is the Space
Needle?" copied "Rome" from it instead of the edit's city.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from server.errors import InvalidArgument
from server.interfaces import TextSink

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    role: str  # one of ROLES
    content: str


@dataclass(frozen=True)
class ChatPrompt:
    """A conversation as the model reads it, and the strings that end the assistant's turn in that format."""

    text: str
    turn_ends: tuple[str, ...] = ()


class ConversationFormat(Protocol):
    def render(self, turns: Sequence[Turn]) -> ChatPrompt:
        """The text after which the model writes the assistant's next turn."""
        ...


class PlainFormat:
    """A transcript for models without a chat template."""

    # One exchange that shows the format and the length of an answer (see the module docstring).
    EXAMPLE = "User: Who painted the Mona Lisa?\nAssistant: The Mona Lisa was painted by Leonardo da Vinci.\n"
    LABELS = {"user": "User", "assistant": "Assistant"}

    def render(self, turns: Sequence[Turn]) -> ChatPrompt:
        system = [t.content.strip() + "\n\n" for t in turns if t.role == "system"]
        lines = [f"{self.LABELS[t.role]}: {t.content.strip()}\n" for t in turns if t.role != "system"]
        text = "".join([*system, self.EXAMPLE, *lines]) + "Assistant:"
        # A base model goes on to write the user's next line; that line ends the reply.
        return ChatPrompt(text, turn_ends=("\nUser:", "\nAssistant:"))


class TemplateFormat:
    """The tokenizer's own chat template. Its end-of-turn token is the model's EOS, so no turn_ends are needed."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        # Templates usually write the BOS token themselves; tokenizers that also add one would double it.
        bos = tokenizer.bos_token
        self._strip_bos = bos if bos and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id] else None

    def render(self, turns: Sequence[Turn]) -> ChatPrompt:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        try:
            text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja's TemplateError and whatever a template raises on purpose
            raise InvalidArgument(f"turns do not fit this model's chat template: {exc}") from None
        text = str(text)
        if self._strip_bos is not None and text.startswith(self._strip_bos):
            text = text[len(self._strip_bos):]
        return ChatPrompt(text)


def conversation_format(tokenizer: PreTrainedTokenizerBase) -> ConversationFormat:
    return TemplateFormat(tokenizer) if getattr(tokenizer, "chat_template", None) else PlainFormat()


class ReplyFilter:
    """Turns a continuation, streamed or whole, into the assistant's reply.

    The reply ends before the first turn end (the decoder's stop strings keep them in the text) and has no
    surrounding white space. Streamed text is passed on as soon as it is certain to be part of the reply:
    trailing white space waits until more text follows it.
    """

    def __init__(self, turn_ends: tuple[str, ...], on_text: TextSink | None = None) -> None:
        self._turn_ends = turn_ends
        self._on_text = on_text
        self._raw = ""
        self._sent = 0  # characters of the reply already passed to on_text

    def feed(self, delta: str) -> None:
        self._raw += delta
        if self._on_text is None:
            return
        ready = self.reply(self._raw)
        if len(ready) > self._sent:
            self._on_text(ready[self._sent:])
            self._sent = len(ready)

    def reply(self, text: str) -> str:
        cuts = [i for end in self._turn_ends if (i := text.find(end)) >= 0]
        return text[: min(cuts, default=len(text))].strip()


def latest_user_turn(turns: Sequence[Turn]) -> str:
    """The turn being answered (check_turns has made sure it is the last one)."""
    return turns[-1].content


def previous_exchange(turns: Sequence[Turn]) -> str:
    """The user and assistant turns before the latest one, as one text; empty at the first question."""
    earlier = [t for t in turns[:-1] if t.role != "system"]
    last_user = max((i for i, t in enumerate(earlier) if t.role == "user"), default=None)
    return "" if last_user is None else "\n".join(t.content.strip() for t in earlier[last_user:])
