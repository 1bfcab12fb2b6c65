"""Approximate indexes for large namespaces: a PQ fast scan re-ranked exactly; deletes as tombstones; background
rebuilds.

A namespace's index starts exact (flat inner product). Once it holds `threshold` live vectors, a background
thread builds an approximate index from a copy of them and swaps it in; reads keep using the flat index
meanwhile. The approximate index scans every vector's 4-bit product-quantisation code (FAISS fast scan: a few
ms for a million keys on one core) and re-ranks the best `refine_factor` × n candidates with their exact
vectors, which it keeps (IndexRefineFlat). It was chosen over HNSW and IVF by measurement (docs/BENCHMARKS.md,
"Approximate index"): queries from real text are far from every key, so their top 8 are near-ties that graph
and cluster searches miss, while a full scan of codes does not; and it builds in seconds, not half an hour.

The fast scan cannot remove vectors, so a delete overwrites the vector's id in the IndexIDMap2 with -1 (a
tombstone), which searches drop, asking for more results until n live ones are found; the tombstones are
saved with the index file as it is. When tombstones reach `rebuild_fraction` of the vectors, or the namespace
shrinks under half the threshold, the index is rebuilt the same way (as flat below the threshold). An index of
another kind loaded from disk (HNSW, from earlier versions) is served as it is and rebuilt in the background.

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


@dataclass(frozen=True)
class AnnSettings:
    """Chosen from the measurement in docs/BENCHMARKS.md ("Approximate index")."""

    threshold: int = 100_000  # live vectors in a namespace from which its index is approximate; 0: always flat
    dims_per_code: int = 4  # dimensions per 4-bit PQ code: 96 codes (48 bytes) for a 384-dim key
    # Candidates re-ranked exactly, per result asked for: at 1M MiniLM-shaped keys, recall@8 0.986 at 128,
    # 0.998 at 256, 1.000 at 512 (search p50 2.8 / 3.6 / 4.5 ms).
    refine_factor: int = 512
    training_sample: int = 65_536  # vectors the PQ codebooks are trained on (16 centroids per code)
    rebuild_fraction: float = 0.2  # tombstones / vectors that start a rebuild
    # A build that finds more than this share of its vectors added since it started starts over from the
    # current vectors, instead of adding them under the lock (which would block reads for that long).
    max_catch_up: float = 0.25


def is_approximate(index: faiss.IndexIDMap2) -> bool:
    """True for any index that is not the exact flat one (the current kind, or HNSW loaded from disk)."""
    return not isinstance(faiss.downcast_index(index.index), faiss.IndexFlat)


def _is_current_kind(index: faiss.IndexIDMap2) -> bool:
    return isinstance(faiss.downcast_index(index.index), faiss.IndexRefine)


def _id_map(index: faiss.IndexIDMap2) -> np.ndarray:
    """A writable view of the index's external ids, one per stored vector (n,)."""
    return faiss.rev_swig_ptr(index.id_map.data(), index.ntotal)


def _stored_vectors(index: faiss.IndexIDMap2) -> np.ndarray:
    """A view of every stored vector (n, d), tombstoned ones included (each kind keeps them in an IndexFlat)."""
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexRefine):
        inner = faiss.downcast_index(inner.refine_index)
    elif isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    xb = inner.get_xb()  # type: ignore[attr-defined]  # IndexFlat's, which the stubs do not know
    return faiss.rev_swig_ptr(xb, index.ntotal * index.d).reshape(index.ntotal, index.d)


def new_index(dim: int, training: np.ndarray | None, settings: AnnSettings) -> faiss.IndexIDMap2:
    """A flat index, or (given training vectors (n, dim)) an approximate one trained on a sample of them."""
    if training is None:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if dim % settings.dims_per_code:
        raise ValueError(f"key dimension {dim} is not a multiple of dims_per_code {settings.dims_per_code}")
    codes = faiss.IndexPQFastScan(dim, dim // settings.dims_per_code, 4, faiss.METRIC_INNER_PRODUCT)
    refined = faiss.IndexRefineFlat(codes)
    sample = np.random.default_rng(0).permutation(len(training))[: settings.training_sample]
    refined.train(training[np.sort(sample)])
    return faiss.IndexIDMap2(refined)


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
                index = self._indexes[namespace] = new_index(self.dim, None, self.settings)
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
            query = vector.reshape(1, -1).astype(np.float32)
            # Tombstones come back as -1: ask for more until n live ids are among the results (one pass when
            # there are none; deletes are spread, so the first few passes almost always suffice).
            asked = min(n, live)
            while True:
                sims, ids = index.search(query, min(asked, index.ntotal), params=self._params(index))
                keep = ids[0] >= 0
                if keep.sum() >= min(n, live) or asked >= index.ntotal:
                    return ids[0][keep][:n], sims[0][keep][:n]
                asked *= 4

    def _params(self, index: faiss.IndexIDMap2) -> faiss.SearchParameters | None:
        if not _is_current_kind(index):
            return None
        # faiss's stubs omit the constructor's keyword arguments, which faiss ≥ 1.8 takes
        return faiss.IndexRefineSearchParameters(k_factor=float(self.settings.refine_factor))  # type: ignore[call-arg]

    def review(self, namespaces: Iterable[str]) -> None:
        """Starts the rebuilds these namespaces' indexes need as they stand (after a load from disk)."""
        with self.lock:
            for namespace in namespaces:
                self._maybe_rebuild(namespace)

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
        """The kind a rebuild would make (True: approximate), or None when the current index is right."""
        threshold = self.settings.threshold
        index = self._indexes[namespace]
        live, approximate = self.live(namespace), is_approximate(index)
        if not approximate:
            return True if threshold and live >= threshold else None
        if not threshold or live < threshold // 2:
            return False
        if not _is_current_kind(index):  # an HNSW index from an earlier version
            return True
        return True if self.tombstones(namespace) >= self.settings.rebuild_fraction * index.ntotal else None

    def _maybe_rebuild(self, namespace: str) -> None:
        if self._closed or namespace in self._builds or (approximate := self._wanted(namespace)) is None:
            return
        ids, vectors = self._live_copy(namespace)
        build = self._builds[namespace] = _Build()
        log.info("namespace %s: building a%s index of %d vectors in the background", namespace,
                 "n approximate" if approximate else " flat", len(ids))
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
            new = new_index(self.dim, vectors if approximate else None, self.settings)
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
                         "approximate" if approximate else "flat", self.live(namespace))
        except Exception:  # the current index stays in use; the next add or delete tries again
            log.exception("building the index of namespace %s failed", namespace)
            with self.lock:
                self._builds.pop(namespace, None)
        finally:
            build.done.set()
