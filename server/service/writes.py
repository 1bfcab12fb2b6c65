"""The edit-writing lane: AddEdits and stored corrections embed their key texts here, on their own thread.

Embedding a large batch takes seconds. On the I/O threads that reads and the gate use, two such batches held every
thread and a one-row ListEdits in another namespace waited 23 s behind them. Here writes queue behind writes only,
and the queue is bounded by the characters waiting to be embedded (the work grows with text length, not with the
number of requests); past the bound a write is refused at once with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import TypeVar

from server.errors import ResourceExhausted
from server.types import EditSpec

T = TypeVar("T")


def key_text_chars(specs: Sequence[EditSpec]) -> int:
    """Characters the encoder reads for these edits: each key text (prompt, paraphrase, the prompt under each
    alias)."""
    return sum(len(t) for s in specs for t in s.key_texts())


class WriteLane:
    """Runs writes one at a time on `executor` (one thread), admitting at most `limit_chars` of key text at once."""

    def __init__(self, executor: Executor, limit_chars: int) -> None:
        self._executor = executor
        self._limit_chars = limit_chars
        self._lock = threading.Lock()  # front ends may call from more than one event loop
        self._pending_chars = 0

    @property
    def pending_chars(self) -> int:
        return self._pending_chars

    async def run(self, chars: int, fn: Callable[[], T]) -> T:
        if chars > self._limit_chars:
            raise ResourceExhausted(
                f"these edits have {chars} characters of prompts and paraphrases to embed, more than the server "
                f"takes at once ({self._limit_chars}, limits.max_pending_edit_chars); send them in smaller batches"
            )
        with self._lock:
            if self._pending_chars + chars > self._limit_chars:
                raise ResourceExhausted(
                    f"{self._pending_chars} characters of edits are waiting to be embedded; with these {chars} that "
                    f"passes limits.max_pending_edit_chars ({self._limit_chars}): retry when earlier writes finish"
                )
            self._pending_chars += chars
        future: Future[T] = self._executor.submit(fn)
        # Released when the work ends or is cancelled before it starts, not when the caller stops waiting.
        future.add_done_callback(lambda _: self._release(chars))
        return await asyncio.wrap_future(future)

    def _release(self, chars: int) -> None:
        with self._lock:
            self._pending_chars -= chars
