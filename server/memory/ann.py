"""Approximate (HNSW) indexes for large namespaces: deletes as tombstones, rebuilt in the background.

A namespace's index starts exact (flat inner product). Once it holds `threshold` live vectors, a background
thread builds an HNSW index from a copy of them and swaps it in; reads keep using the flat index meanwhile.
FAISS's HNSW cannot remove vectors, so a delete overwrites the vector's id in the IndexIDMap2 with -1 (a
tombstone) and searches pass a selector that admits only ids ≥ 0: results never include a deleted edit,
and the tombstones are saved with the index file as it is (the file format is unchanged). When tombstones
reach `rebuild_fraction` of the vectors, or the namespace shrinks under half the threshold, the index is
rebuilt the same way (as flat below the threshold).

Every method here runs under `lock`; the caller's own lock serialises adds, deletes and searches, and the
background thread takes `lock` only to copy the live vectors and to swap the new index in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field

import faiss
import numpy as np

log = logging.getLogger(__name__)

TOMBSTONE = -1
# Admits every live id: tombstones are -1 and the store's ids are positive.
_LIVE = faiss.IDSelectorRange(0, 2**62)


@dataclass(frozen=True)
class AnnSettings:
    """Chosen from the measurement in docs/BENCHMARKS.md ("Approximate index")."""

    threshold: int = 100_000  # live vectors in a namespace from which its index is HNSW; 0: always flat
    m: int = 32  # HNSW graph degree
    # 200 rather than FAISS's 40: at 50k MiniLM-shaped keys and ef_search 256, recall@8 0.990 against 0.977 at 80.
    ef_construction: int = 200
    ef_search: int = 512  # candidates kept while searching (at least the results asked for): recall@8 0.9975 at 50k
    rebuild_fraction: float = 0.2  # tombstones / vectors that start a rebuild
    # A build that finds more than this share of its vectors added since it started starts over from the
    # current vectors, instead of adding them under the lock (which would block reads for that long).
    max_catch_up: float = 0.25


def is_approximate(index: faiss.IndexIDMap2) -> bool:
    return isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW)


def _id_map(index: faiss.IndexIDMap2) -> np.ndarray:
    """A writable view of the index's external ids, one per stored vector (n,)."""
    return faiss.rev_swig_ptr(index.id_map.data(), index.ntotal)


def _stored_vectors(index: faiss.IndexIDMap2) -> np.ndarray:
    """A view of every stored vector (n, d), tombstoned ones included (flat and HNSW store them in full)."""
    inner = faiss.downcast_index(index.index)
    storage = faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
    xb = storage.get_xb()  # type: ignore[attr-defined]  # IndexFlat's, which the stubs do not know
    return faiss.rev_swig_ptr(xb, index.ntotal * index.d).reshape(index.ntotal, index.d)


def new_index(dim: int, approximate: bool, settings: AnnSettings) -> faiss.IndexIDMap2:
    if not approximate:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    hnsw = faiss.IndexHNSWFlat(dim, settings.m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = settings.ef_construction
    return faiss.IndexIDMap2(hnsw)


@dataclass
class _Build:
    """A build in flight: what changed in its namespace since its vectors were copied."""

    added: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (ids, vectors)
    removed: set[int] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)

    def added_count(self) -> int:
        return sum(len(ids) for ids, _ in self.added)


class ApproximateIndexes:
    """The per-namespace index policy over a NamespaceIndex's dict of IndexIDMap2 (shared, replaced on swap)."""

    def __init__(self, dim: int, indexes: MutableMapping[str, faiss.IndexIDMap2], settings: AnnSettings) -> None:
        self.dim = dim
        self.settings = settings
        self.lock = threading.RLock()
        self._indexes = indexes
        self._tombstones: dict[str, int] = {}  # counted lazily from the id map (also after a load)
        self._builds: dict[str, _Build] = {}
        self._closed = False

    def add(self, namespace: str, key_ids: np.ndarray, vectors: np.ndarray) -> None:
        with self.lock:
            index = self._indexes.get(namespace)
            if index is None:
                index = self._indexes[namespace] = new_index(self.dim, False, self.settings)
            index.add_with_ids(vectors, key_ids)
            if (build := self._builds.get(namespace)) is not None:
                build.added.append((key_ids.copy(), vectors.copy()))
            self._maybe_rebuild(namespace)

    def remove(self, namespace: str, key_ids: Iterable[int]) -> None:
        with self.lock:
            index = self._indexes.get(namespace)
            if index is None:
                return
            ids = np.asarray(list(key_ids), dtype=np.int64)
            if (build := self._builds.get(namespace)) is not None:
                build.removed.update(ids.tolist())
            if not is_approximate(index):
                index.remove_ids(ids)  # type: ignore[arg-type]  # faiss takes arrays
                return
            before = self.tombstones(namespace)
            id_map = _id_map(index)
            hit = np.isin(id_map, ids)
            id_map[hit] = TOMBSTONE
            self._tombstones[namespace] = before + int(hit.sum())
            self._maybe_rebuild(namespace)

    def search(self, namespace: str, vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to n (live) nearest ids and their similarities, best first."""
        with self.lock:
            index = self._indexes.get(namespace)
            live = 0 if index is None else self.live(namespace)
            if index is None or live == 0:
                return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
            params = None
            if is_approximate(index):
                params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]  # in faiss ≥ 1.7.3, not the stubs
                    efSearch=max(self.settings.ef_search, n))
                if self.tombstones(namespace):
                    params.sel = _LIVE
            sims, ids = index.search(vector.reshape(1, -1).astype(np.float32), min(n, live), params=params)
        keep = ids[0] >= 0
        return ids[0][keep], sims[0][keep]

    def tombstones(self, namespace: str) -> int:
        with self.lock:
            if namespace not in self._tombstones:
                index = self._indexes.get(namespace)
                approximate = index is not None and is_approximate(index)
                self._tombstones[namespace] = (
                    int(np.count_nonzero(_id_map(index) < 0)) if index is not None and approximate else 0
                )
            return self._tombstones[namespace]

    def live(self, namespace: str) -> int:
        with self.lock:
            index = self._indexes.get(namespace)
            return 0 if index is None else int(index.ntotal) - self.tombstones(namespace)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Waits until no build is in flight (a build may start another); False on timeout."""
        while True:
            with self.lock:
                pending = next(iter(self._builds.values()), None)
            if pending is None:
                return True
            if not pending.done.wait(timeout_s):
                return False

    def close(self) -> None:
        """Builds still running are dropped when they finish (the saved index is the one in use)."""
        with self.lock:
            self._closed = True

    # --- rebuilds -------------------------------------------------------------------------

    def _wanted(self, namespace: str) -> bool | None:
        """The kind a rebuild would make (True: HNSW), or None when the current index is right."""
        threshold = self.settings.threshold
        index = self._indexes[namespace]
        live, approximate = self.live(namespace), is_approximate(index)
        if not approximate:
            return True if threshold and live >= threshold else None
        if not threshold or live < threshold // 2:
            return False
        return True if self.tombstones(namespace) >= self.settings.rebuild_fraction * index.ntotal else None

    def _maybe_rebuild(self, namespace: str) -> None:
        if self._closed or namespace in self._builds or (approximate := self._wanted(namespace)) is None:
            return
        ids, vectors = self._live_copy(namespace)
        build = self._builds[namespace] = _Build()
        log.info("namespace %s: building a%s index of %d vectors in the background", namespace,
                 "n HNSW" if approximate else " flat", len(ids))
        threading.Thread(target=self._build, args=(namespace, build, approximate, ids, vectors),
                         name=f"index-build-{namespace}", daemon=True).start()

    def _live_copy(self, namespace: str) -> tuple[np.ndarray, np.ndarray]:
        index = self._indexes[namespace]
        ids = _id_map(index)
        live = ids >= 0
        return ids[live].copy(), np.ascontiguousarray(_stored_vectors(index)[live])

    def _build(self, namespace: str, build: _Build, approximate: bool, ids: np.ndarray, vectors: np.ndarray) -> None:
        try:
            # FAISS releases the GIL while it builds: searches go on against the current index.
            new = new_index(self.dim, approximate, self.settings)
            new.add_with_ids(vectors, ids)
            with self.lock:
                del self._builds[namespace]
                if self._closed or namespace not in self._indexes:
                    return
                if build.added_count() > self.settings.max_catch_up * max(len(ids), 1):
                    log.info("namespace %s grew by %d vectors during the build: building again", namespace,
                             build.added_count())
                    self._maybe_rebuild(namespace)
                    return
                for added_ids, added_vectors in build.added:
                    new.add_with_ids(added_vectors, added_ids)
                self._indexes[namespace] = new
                self._tombstones.pop(namespace, None)
                if build.removed:  # deletes since the copy, on the new index
                    self.remove(namespace, build.removed)
                log.info("namespace %s: %s index of %d vectors in use", namespace,
                         "HNSW" if approximate else "flat", self.live(namespace))
        except Exception:  # the current index stays in use; the next add or delete tries again
            log.exception("building the index of namespace %s failed", namespace)
            with self.lock:
                self._builds.pop(namespace, None)
        finally:
            build.done.set()
