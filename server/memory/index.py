"""FAISS indexes of edit key vectors, one per namespace, rebuilt from the store when stale.

Cosine similarity = inner product of unit vectors. Ids are the store's key ids, so a
delete removes exactly that edit's vectors. The files on disk are a start-up shortcut:
they are used only when they record the store generation they reflect and match the checksums
the manifest records for them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from server.files import private_dir, write_private
from server.memory.ann import AnnSettings, ApproximateIndexes

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class NamespaceIndex:
    def __init__(self, dim: int, approximate: AnnSettings | None = None) -> None:
        self.dim = dim
        # Searches come one query at a time; on a 2-core machine FAISS's OpenMP threads cost more
        # than they save (measured at 40k keys: p50 48 ms with 2 threads, 13 ms with 1, cores busy).
        faiss.omp_set_num_threads(1)
        self._by_namespace: dict[str, faiss.IndexIDMap2] = {}
        # Large namespaces get an approximate index (server/memory/ann.py), which adds, deletes and searches go through.
        self._ann = ApproximateIndexes(dim, self._by_namespace, approximate or AnnSettings())

    def add(self, namespace: str, key_ids: np.ndarray, vectors: np.ndarray) -> None:
        """key_ids (n,) int64; vectors (n, dim) float32 unit rows."""
        self._ann.add(namespace, np.asarray(key_ids, dtype=np.int64), np.ascontiguousarray(vectors, dtype=np.float32))

    def remove(self, namespace: str, key_ids: Iterable[int]) -> None:
        self._ann.remove(namespace, key_ids)

    def search(self, namespace: str, vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n nearest key ids (n,) and their cosine similarities (n,) for a (dim,) query."""
        return self._ann.search(namespace, vector, n)

    def size(self, namespace: str | None = None) -> int:
        """Live vectors (deleted ones an approximate index still holds are not counted)."""
        if namespace is not None:
            return self._ann.live(namespace)
        return sum(self._ann.live(ns) for ns in list(self._by_namespace))

    def wait_for_builds(self, timeout_s: float | None = None) -> bool:
        """Waits for background index builds to finish (benchmarks, tests); False on timeout."""
        return self._ann.wait(timeout_s)

    def close(self) -> None:
        """Drops background builds still running (after a final save)."""
        self._ann.close()

    def save(self, directory: Path, generation: int) -> None:
        """Writes every namespace's index, then a manifest naming the store generation and each file's sha256
        (atomic renames). A failed save (OSError: a full disk) leaves no temporary file; a file renamed before
        it no longer matches the old manifest's checksum, so the next start rebuilds."""
        private_dir(directory)
        files, checksums = {}, {}
        for i, (namespace, index) in enumerate(sorted(self._by_namespace.items())):
            name = f"ns{i:06d}.faiss"
            data = faiss.serialize_index(index).tobytes()
            write_private(directory / (name + ".tmp"), data)
            os.replace(directory / (name + ".tmp"), directory / name)
            files[namespace], checksums[name] = name, hashlib.sha256(data).hexdigest()
        manifest = {"generation": generation, "dim": self.dim, "namespaces": files, "sha256": checksums}
        write_private(directory / (MANIFEST + ".tmp"), json.dumps(manifest).encode())
        os.replace(directory / (MANIFEST + ".tmp"), directory / MANIFEST)

    @classmethod
    def load(
        cls, directory: Path, dim: int, generation: int, approximate: AnnSettings | None = None
    ) -> NamespaceIndex | None:
        """The saved index if it reflects this store generation; None if missing, stale, unreadable or not
        matching its checksums."""
        try:
            text = (directory / MANIFEST).read_text()
        except FileNotFoundError:
            log.info("no index files at %s", directory)
            return None
        except OSError as exc:
            log.warning("index files at %s are unreadable (%s)", directory, exc)
            return None
        try:
            manifest = json.loads(text)
            if manifest["generation"] != generation or manifest["dim"] != dim:
                log.info("index files at %s are stale (generation %s, store at %s)",
                         directory, manifest["generation"], generation)
                return None
            index = cls(dim, approximate)
            for namespace, name in manifest["namespaces"].items():
                data = (directory / name).read_bytes()
                if hashlib.sha256(data).hexdigest() != manifest["sha256"][name]:
                    raise ValueError(f"{name} does not match its checksum in {MANIFEST}")
                loaded = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
                if not isinstance(loaded, faiss.IndexIDMap2) or loaded.d != dim:
                    raise ValueError(f"{name} is not an id-mapped index of dimension {dim}")
                index._by_namespace[namespace] = loaded
            index._ann.review(list(index._by_namespace))  # an index of an earlier kind is rebuilt
            return index
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:  # faiss: RuntimeError
            log.warning("index files at %s are unreadable (%s)", directory, exc)
        return None


def saved_generation(directory: Path) -> int | None:
    """The store generation the saved manifest records; None when there is no readable manifest."""
    try:
        generation = json.loads((directory / MANIFEST).read_text())["generation"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return generation if isinstance(generation, int) else None
