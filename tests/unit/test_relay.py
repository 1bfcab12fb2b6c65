"""relay(): a stream cancelled while it waits for text leaves no pending task behind (issue 23, item 10)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from server.interfaces import StopCheck, TextSink
from server.service.concurrency import relay


def test_cancelling_a_waiting_stream_leaves_no_pending_task(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def answer(on_text: TextSink, should_stop: StopCheck) -> str:
            started.set()
            await asyncio.Event().wait()  # a model that has not produced its first token yet
            return "never"

        async def consume() -> None:
            async for _ in relay(answer, lambda: False):
                pass

        consumer = asyncio.ensure_future(consume())
        await started.wait()
        await asyncio.sleep(0)  # relay is now waiting on its next text delta
        consumer.cancel()  # as grpc does when the caller cancels the stream
        with pytest.raises(asyncio.CancelledError):
            await consumer
        for _ in range(3):  # let the cancelled tasks finish
            await asyncio.sleep(0)
        gc.collect()  # a task still pending is destroyed here, and asyncio logs it

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    assert "Task was destroyed but it is pending" not in caplog.text
