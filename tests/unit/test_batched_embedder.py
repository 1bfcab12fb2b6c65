"""Concurrent queries share encoder passes (server/memory/batched_embedder.py), each getting its own encoding."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.memory.batched_embedder import BatchedEmbedder
from server.types import EncodedText


class RecordingEmbedder:
    """Encodes a text as its length; records each pass, and holds the first one until released."""

    dim = 1

    def __init__(self) -> None:
        self.passes: list[list[str]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def encode_texts(self, texts: Sequence[str]) -> list[EncodedText]:
        self.passes.append(list(texts))
        if len(self.passes) == 1:
            self.first_started.set()
            assert self.release.wait(30)
        if "bad" in texts:
            raise ValueError("cannot encode 'bad'")
        return [EncodedText(t, np.array([len(t)], dtype=np.float32), np.zeros((1, 1), np.float32), ((0, len(t)),))
                for t in texts]

    def encode_text(self, text: str) -> EncodedText:
        return self.encode_texts([text])[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[len(t)] for t in texts], dtype=np.float32)


def test_queries_arriving_during_a_pass_share_the_next_one() -> None:
    inner = RecordingEmbedder()
    embedder = BatchedEmbedder(inner)
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    with ThreadPoolExecutor(len(texts)) as pool:
        first = pool.submit(embedder.encode_text, texts[0])
        assert inner.first_started.wait(30)
        rest = [pool.submit(embedder.encode_text, t) for t in texts[1:]]
        while len(embedder._waiting) < len(rest):  # all four queued behind the held pass
            threading.Event().wait(0.01)
        inner.release.set()
        results = [first.result(30), *(f.result(30) for f in rest)]
    assert len(inner.passes) == 2 and inner.passes[0] == ["a"] and sorted(inner.passes[1]) == texts[1:]
    assert [r.text for r in results] == texts and [float(r.vector[0]) for r in results] == [1, 2, 3, 4, 5]


def test_a_failing_pass_fails_each_query_in_it_and_the_next_pass_runs() -> None:
    inner = RecordingEmbedder()
    inner.release.set()
    embedder = BatchedEmbedder(inner)
    with pytest.raises(ValueError, match="cannot encode"):
        embedder.encode_text("bad")
    assert embedder.encode_text("good").text == "good"


def test_a_pass_takes_at_most_max_batch_queries() -> None:
    inner = RecordingEmbedder()
    embedder = BatchedEmbedder(inner, max_batch=2)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(embedder.encode_text, "x")
        assert inner.first_started.wait(30)
        rest = [pool.submit(embedder.encode_text, t) for t in ("p", "q", "r", "s", "t")]
        while len(embedder._waiting) < len(rest):
            threading.Event().wait(0.01)
        inner.release.set()
        assert [f.result(30).text for f in [first, *rest]] == ["x", "p", "q", "r", "s", "t"]
    assert [len(p) for p in inner.passes] == [1, 2, 2, 1]
