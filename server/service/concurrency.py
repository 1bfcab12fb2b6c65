"""How the use cases leave the event loop: blocking calls on the I/O threads, and streamed text relayed from the
model thread. Front ends of every kind (gRPC, HTTP) stream through `relay`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from server.interfaces import StopCheck, TextSink

T = TypeVar("T")


async def off_loop(executor: Executor, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on `executor` (embedding and SQLite work: off the event loop and off the model thread)."""
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


async def relay(
    answer: Callable[[TextSink, StopCheck], Awaitable[T]], caller_gone: StopCheck
) -> AsyncGenerator[tuple[str, T | None], None]:
    """Runs `answer(on_text, should_stop)`; yields (delta, None) for each piece of text, then ("", result).

    `on_text` may be called from any thread. `should_stop` turns true when `caller_gone()` does or the consumer
    stops iterating, so the model thread stops generating at the next token.
    """
    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue[str] = asyncio.Queue()
    cancelled = threading.Event()

    def on_text(delta: str) -> None:  # called on the model thread
        loop.call_soon_threadsafe(deltas.put_nowait, delta)

    answering = asyncio.ensure_future(answer(on_text, lambda: cancelled.is_set() or caller_gone()))
    next_delta: asyncio.Future[str] | None = None
    try:
        while True:
            next_delta = asyncio.ensure_future(deltas.get())
            await asyncio.wait({next_delta, answering}, return_when=asyncio.FIRST_COMPLETED)
            if not next_delta.done():
                next_delta.cancel()
                break
            yield next_delta.result(), None
        while not deltas.empty():  # text queued before the answer finished
            yield deltas.get_nowait(), None
        yield "", await answering
    finally:
        cancelled.set()
        # Both may still be pending when the caller cancels us mid-wait; a task left pending is destroyed with a
        # "Task was destroyed but it is pending" error in the log.
        for task in (next_delta, answering):
            if task is not None and not task.done():
                task.cancel()
