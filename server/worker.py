"""The one thread that owns the language model, and how async code hands it work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import TypeVar

T = TypeVar("T")


class ModelWorker:
    """Runs model calls one at a time on a dedicated thread, reporting how long each waited."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def run(self, fn: Callable[[], T]) -> tuple[T, float]:
        """fn's result and the milliseconds it queued before starting."""
        submitted = perf_counter()
        started: list[float] = []

        def timed() -> T:
            started.append(perf_counter())
            return fn()

        result = await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        return result, (started[0] - submitted) * 1e3

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
