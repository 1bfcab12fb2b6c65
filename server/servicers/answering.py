"""What the RPCs that run the model share: relaying text as it is generated, and the timings of an answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from time import perf_counter
from typing import TypeVar

import grpc

from server.interfaces import StopCheck, TextSink
from server.servicers.rpc import caller_gone
from server.types import Decision, Timings

T = TypeVar("T")


async def relay(
    answer: Callable[[TextSink, StopCheck], Awaitable[T]], context: grpc.aio.ServicerContext
) -> AsyncGenerator[tuple[str, T | None], None]:
    """Runs `answer(on_text, should_stop)`; yields (delta, None) for each piece of text, then ("", result).

    `on_text` may be called from any thread. `should_stop` turns true when the caller goes away, its deadline
    passes or the consumer stops iterating, so the model thread stops generating at the next token.
    """
    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue[str] = asyncio.Queue()
    cancelled = threading.Event()
    gone = caller_gone(context)

    def on_text(delta: str) -> None:  # called on the model thread
        loop.call_soon_threadsafe(deltas.put_nowait, delta)

    answering = asyncio.ensure_future(answer(on_text, lambda: cancelled.is_set() or gone()))
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
        if not answering.done():
            answering.cancel()


def answer_timings(decision: Decision, queue_ms: float, before_model: float, started: float) -> Timings:
    """The decision's embed, search and gate times, with the queue, generation and total times since `started`."""
    now = perf_counter()
    return replace(
        decision.timings, queue_ms=queue_ms, generate_ms=(now - before_model) * 1e3 - queue_ms,
        total_ms=(now - started) * 1e3,
    )
