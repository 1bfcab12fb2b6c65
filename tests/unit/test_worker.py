from __future__ import annotations

import asyncio
import threading

import pytest

from server.errors import Cancelled, ResourceExhausted
from server.worker import ModelWorker


def test_full_queue_is_refused_at_once_and_frees_up_after() -> None:
    release = threading.Event()

    async def go() -> None:
        worker = ModelWorker(max_queue=2)
        try:
            first = asyncio.ensure_future(worker.run(lambda: release.wait(10)))
            second = asyncio.ensure_future(worker.run(lambda: "second"))
            await asyncio.sleep(0)  # both submitted
            assert worker.pending == 2
            with pytest.raises(ResourceExhausted, match="server busy: 2 requests"):
                await worker.run(lambda: "third")
            release.set()
            assert (await first)[0] is True and (await second)[0] == "second"
            assert worker.pending == 0
            assert (await worker.run(lambda: "again"))[0] == "again"
        finally:
            release.set()
            worker.shutdown()

    asyncio.run(go())


def test_a_call_whose_caller_is_gone_is_not_run() -> None:
    ran: list[str] = []

    async def go() -> None:
        worker = ModelWorker()
        try:
            with pytest.raises(Cancelled):
                await worker.run(lambda: ran.append("x"), caller_gone=lambda: True)
            await worker.run(lambda: ran.append("y"), caller_gone=lambda: False)
            assert worker.pending == 0
        finally:
            worker.shutdown()

    asyncio.run(go())
    assert ran == ["y"]


def test_cancelled_waiter_frees_its_slot() -> None:
    release = threading.Event()

    async def go() -> None:
        worker = ModelWorker(max_queue=2)
        try:
            first = asyncio.ensure_future(worker.run(lambda: release.wait(10)))
            queued = asyncio.ensure_future(worker.run(lambda: "never"))
            await asyncio.sleep(0)
            queued.cancel()  # still waiting behind `first`: its executor job is cancelled too
            release.set()
            await first
            assert worker.pending == 0
        finally:
            release.set()
            worker.shutdown()

    asyncio.run(go())
