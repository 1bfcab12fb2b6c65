"""A replica follows its shared store (PostgreSQL) on a thread: it wakes on the store's notifications, or every
`poll_s` in case one was lost with a connection, and catches up by generation, so no write is missed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from server.errors import EditcacheError
from server.memory.edit_memory import EditMemory
from server.types import Edit

log = logging.getLogger(__name__)


class StoreFollower:
    """Applies other processes' writes to `memory`'s index and hands the edits they made live to `on_live` (the
    gate's cache)."""

    def __init__(self, memory: EditMemory, on_live: Callable[[Sequence[Edit]], None], poll_s: float = 1.0) -> None:
        self._memory = memory
        self._on_live = on_live
        self._poll_s = poll_s
        self._listener = memory.listen()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                live = self._memory.follow()
                if live:
                    self._on_live(live)
                if failing:
                    log.info("following the edit store again")
                failing = False
            except EditcacheError as exc:  # the store is down: queries go on from this process's copy
                if not failing:
                    log.warning("cannot follow the edit store (%s); retrying every %.0f s", exc, self._poll_s)
                failing = True
            except Exception:  # a follower that dies quietly would leave this replica stale for good
                log.exception("following the edit store failed; retrying")
            self._listener.wait(self._poll_s)
