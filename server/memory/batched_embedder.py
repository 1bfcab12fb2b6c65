"""Concurrent queries embedded in shared encoder passes.

Each request thread embeds its query before the gate can decide; alone, sixteen concurrent queries make sixteen
encoder passes, one after another on the same cores. Here a query that arrives while a pass runs waits for it, and
the next pass embeds every query waiting by then. No thread of its own: the first waiting caller to get the encoder
runs the pass for all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from server.interfaces import Embedder
from server.types import EncodedText

MAX_BATCH = 64  # queries in one pass


class BatchedEmbedder:
    """`embedder`, with `encode_text` calls from concurrent threads sharing passes; the rest passes straight through."""

    def __init__(self, embedder: Embedder, max_batch: int = MAX_BATCH) -> None:
        self._embedder = embedder
        self.dim = embedder.dim
        self._max_batch = max_batch
        self._waiting: list[tuple[str, Future[EncodedText]]] = []
        self._waiting_lock = threading.Lock()
        self._pass_lock = threading.Lock()  # one pass at a time

    def encode_text(self, text: str) -> EncodedText:
        future: Future[EncodedText] = Future()
        with self._waiting_lock:
            self._waiting.append((text, future))
        while not future.done():
            with self._pass_lock:
                if not future.done():  # not answered by the pass that held the lock: run the next one
                    self._run_pass()
        return future.result()

    def _run_pass(self) -> None:
        with self._waiting_lock:
            batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
        try:
            encoded = self._embedder.encode_texts([text for text, _ in batch])
        except BaseException as exc:  # every caller in the pass gets the error, as each would alone
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, encoded, strict=True):
            future.set_result(result)

    def encode_texts(self, texts: Sequence[str]) -> list[EncodedText]:
        return self._embedder.encode_texts(texts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._embedder.encode(texts)
