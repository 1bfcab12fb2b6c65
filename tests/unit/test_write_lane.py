from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.errors import ResourceExhausted
from server.service.writes import WriteLane, key_text_chars
from tests.unit.fakes import make_spec


def test_key_text_chars_counts_prompts_and_paraphrases() -> None:
    spec = make_spec(prompt="abcd", paraphrases=("ef", "ghi"), subject="ab", target_new="xyz")
    assert key_text_chars([spec, spec]) == 18


def test_writes_past_the_limit_are_refused_until_earlier_ones_finish() -> None:
    async def scenario() -> None:
        executor = ThreadPoolExecutor(1)
        lane = WriteLane(executor, limit_chars=100)
        release = threading.Event()
        first = asyncio.ensure_future(lane.run(60, lambda: release.wait(30) and "first"))
        second = asyncio.ensure_future(lane.run(40, lambda: "second"))  # fits beside the first, queued behind it
        await asyncio.sleep(0)
        assert lane.pending_chars == 100
        with pytest.raises(ResourceExhausted, match="100 characters of edits are waiting"):
            await lane.run(1, lambda: "third")
        with pytest.raises(ResourceExhausted, match="smaller batches"):
            await lane.run(101, lambda: "too big")
        release.set()
        assert (await first, await second) == ("first", "second")
        assert lane.pending_chars == 0
        assert await lane.run(100, lambda: "again") == "again"
        executor.shutdown()

    asyncio.run(scenario())


def test_a_write_cancelled_before_it_starts_gives_back_its_share() -> None:
    async def scenario() -> None:
        executor = ThreadPoolExecutor(1)
        lane = WriteLane(executor, limit_chars=100)
        release = threading.Event()
        running = asyncio.ensure_future(lane.run(50, lambda: release.wait(30)))
        queued = asyncio.ensure_future(lane.run(50, lambda: "never"))
        await asyncio.sleep(0)
        queued.cancel()  # the caller went away while the write waited for the thread
        await asyncio.sleep(0.05)
        assert lane.pending_chars == 50
        release.set()
        await running
        assert lane.pending_chars == 0
        executor.shutdown()

    asyncio.run(scenario())
