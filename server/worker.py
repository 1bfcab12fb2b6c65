"""The one thread that owns the language model, and how async code hands it work."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from time import perf_counter
from typing import Any, TypeVar

from server import metrics
from server.errors import Cancelled, ResourceExhausted

T = TypeVar("T")

log = logging.getLogger(__name__)


class ModelWorker:
    """Runs model calls one at a time on a dedicated thread, reporting how long each waited.

    At most `max_queue` calls wait or run at once; one more is refused at once with
    RESOURCE_EXHAUSTED rather than queued behind them.
    """

    def __init__(self, max_queue: int = 64) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._max_queue = max_queue
        self._lock = threading.Lock()
        self._pending = 0  # calls submitted and not yet finished (or cancelled before they started)

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, fn: Callable[[], T], caller_gone: Callable[[], bool] | None = None) -> tuple[T, float]:
        """fn's result and the milliseconds it queued before starting.

        When `caller_gone()` is true by the time fn's turn comes (cancelled, or past its deadline),
        fn is not run and Cancelled is raised.
        """
        with self._lock:
            if self._pending >= self._max_queue:
                raise ResourceExhausted(
                    f"server busy: {self._pending} requests are already waiting for or running on the model "
                    f"(max_queue {self._max_queue}); retry after a short backoff"
                )
            self._pending += 1
        submitted = perf_counter()
        started: list[float] = []

        def timed() -> T:
            started.append(perf_counter())
            if caller_gone is not None and caller_gone():
                waited_ms = (started[0] - submitted) * 1e3
                log.info("not run: the caller went away or its deadline passed while queued (%.0f ms)", waited_ms)
                raise Cancelled("the caller went away or its deadline passed before the model was free")
            metrics.BATCH_SIZE.labels("model").observe(1)  # one call at a time: reads 1 until the worker batches
            return fn()

        try:
            future = self._executor.submit(timed)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)  # also when cancelled before it started
        result = await asyncio.wrap_future(future)
        return result, (started[0] - submitted) * 1e3

    def _finished(self, future: Future[Any] | None) -> None:
        with self._lock:
            self._pending -= 1
        if future is not None and future.cancelled():  # its caller was cancelled (or timed out) while it queued
            log.info("not run: the caller went away or its deadline passed while queued")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
