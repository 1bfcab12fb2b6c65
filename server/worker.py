"""How async code hands work to the model thread (server/generators/batching.py), within a bounded queue."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from time import perf_counter
from typing import Any, TypeVar

from server.errors import Cancelled, ResourceExhausted
from server.generators.batching import ModelThread

T = TypeVar("T")

log = logging.getLogger(__name__)


class ModelWorker:
    """Runs model work on the model thread, reporting how long each call waited.

    `run` gives a call the models to itself. `run_decoding` is for work whose model use is decoding (an answer):
    with `max_batch` above 1 it runs on a request thread of its own and its decoding joins the model's running
    batch (CausalLM built with this worker's `batching`); with 1, it runs alone on the model thread, as `run`.

    At most `max_queue` calls wait or run at once; one more is refused at once with RESOURCE_EXHAUSTED rather than
    queued behind them.
    """

    def __init__(self, max_queue: int = 64, max_batch: int = 1) -> None:
        self.thread = ModelThread(max_batch)
        # Threads that wait on their decoding most of the time: one per request the queue admits.
        self._requests = ThreadPoolExecutor(max_queue, thread_name_prefix="request") if max_batch > 1 else None
        self._max_queue = max_queue
        self._lock = threading.Lock()
        self._pending = 0  # calls submitted and not yet finished (or cancelled before they started)

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def batching(self) -> ModelThread | None:
        """The model thread, for the models whose decoding it batches; None when it decodes one request at a time."""
        return self.thread if self._requests is not None else None

    async def run(self, fn: Callable[[], T], caller_gone: Callable[[], bool] | None = None) -> tuple[T, float]:
        """fn's result, run alone on the model thread, and the milliseconds it queued before starting.

        When `caller_gone()` is true by the time fn's turn comes (cancelled, or past its deadline),
        fn is not run and Cancelled is raised.
        """
        return await self._submit(lambda timed: self.thread.call(timed), fn, caller_gone)

    async def run_decoding(
        self, fn: Callable[[], T], caller_gone: Callable[[], bool] | None = None
    ) -> tuple[T, float]:
        """As `run`, for fn whose model use is decoding, which batching lets run beside other requests'."""
        if self._requests is None:
            return await self.run(fn, caller_gone)
        requests = self._requests
        return await self._submit(lambda timed: requests.submit(timed), fn, caller_gone)

    async def _submit(
        self, submit: Callable[[Callable[[], T]], Future[T]], fn: Callable[[], T],
        caller_gone: Callable[[], bool] | None,
    ) -> tuple[T, float]:
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
            return fn()

        try:
            future = submit(timed)
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
        self.thread.shutdown()  # decoding still running fails with Cancelled, which frees the request threads
        if self._requests is not None:
            self._requests.shutdown(wait=True, cancel_futures=True)
