"""The edit memory: the durable store, its FAISS index and the encoder, kept in agreement."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from server.errors import InvalidArgument
from server.interfaces import EditPage, Embedder
from server.memory.index import NamespaceIndex
from server.memory.store import EditStore
from server.types import Edit, EditSpec, Hit

log = logging.getLogger(__name__)

# Each edit has several keys (prompt, paraphrases); fetch this many keys per wanted edit.
KEYS_PER_EDIT_SEARCHED = 4


class EditMemory:
    """Implements `server.interfaces.Memory` over `data_dir/edits.sqlite` and `data_dir/index/`."""

    def __init__(self, data_dir: Path, embedder: Embedder, encoder_name: str, max_edits_per_namespace: int = 0) -> None:
        self._embedder = embedder
        self._max_edits_per_namespace = max_edits_per_namespace  # 0: no limit
        self._index_dir = data_dir / "index"
        self._store = EditStore(data_dir / "edits.sqlite")
        # Index changes follow store commits; the lock keeps the two in step for readers.
        self._lock = threading.RLock()
        self._reembed_if_encoder_changed(encoder_name)
        self._index = self._load_or_rebuild_index()

    # --- Memory protocol ----------------------------------------------------------------

    def add(self, namespace: str, specs: Sequence[EditSpec]) -> list[Edit]:
        texts = [(s.prompt, *s.paraphrases) for s in specs]
        flat = self._embedder.encode([t for group in texts for t in group])  # (total keys, dim)
        bounds = np.cumsum([0, *map(len, texts)])
        vectors = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        with self._lock:
            # Committed to disk here.
            stored = self._store.insert(namespace, specs, vectors, self._max_edits_per_namespace)
            for (_, key_ids), edit_vectors in zip(stored, vectors, strict=True):
                self._index.add(namespace, np.asarray(key_ids), edit_vectors)
        return [edit for edit, _ in stored]

    def get(self, namespace: str, edit_id: str) -> Edit:
        return self._store.get(namespace, edit_id)

    def page(self, namespace: str, page_size: int, page_token: str) -> EditPage:
        after = _decode_page_token(page_token)
        edits, next_seq, total = self._store.page(namespace, after, page_size)
        return EditPage(edits, "" if next_seq is None else _encode_page_token(next_seq), total)

    def delete(self, namespace: str, edit_id: str) -> Edit:
        with self._lock:
            edit, key_ids = self._store.delete(namespace, edit_id)
            self._index.remove(namespace, key_ids)
        return edit

    def search(self, namespace: str, query_vector: np.ndarray, k: int) -> list[Hit]:
        with self._lock:
            n_keys = self._index.size(namespace)
            wanted = k * KEYS_PER_EDIT_SEARCHED
            while True:  # widen until k distinct edits, in case one edit's many keys fill the top
                key_ids, sims = self._index.search(namespace, query_vector, wanted)
                edits = self._store.edits_for_keys(key_ids.tolist())
                hits: dict[str, Hit] = {}
                for key_id, sim in zip(key_ids.tolist(), sims.tolist(), strict=True):  # best first
                    edit = edits.get(key_id)
                    if edit is not None and edit.id not in hits:
                        hits[edit.id] = Hit(edit, float(sim))
                if len(hits) >= k or wanted >= n_keys:
                    return list(hits.values())[:k]
                wanted *= 4

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Saves the index so the next start can skip the rebuild."""
        with self._lock:
            self._index.save(self._index_dir, self._store.generation())
            self._store.close()

    def _load_or_rebuild_index(self) -> NamespaceIndex:
        generation = self._store.generation()
        index = NamespaceIndex.load(self._index_dir, self._embedder.dim, generation)
        if index is not None:
            log.info("edit index loaded from %s (%d vectors)", self._index_dir, index.size())
            return index
        log.info("rebuilding the edit index from the store (%d vectors)", self._store.count_keys())
        by_namespace: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        for key in self._store.iter_keys():
            ids, vectors = by_namespace.setdefault(key.namespace, ([], []))
            ids.append(key.key_id)
            vectors.append(key.vector)
        index = NamespaceIndex(self._embedder.dim)
        for namespace, (ids, vectors) in by_namespace.items():
            index.add(namespace, np.asarray(ids), np.stack(vectors))  # (n, dim)
        log.info("edit index rebuilt: %d vectors in %d namespaces", index.size(), len(by_namespace))
        index.save(self._index_dir, generation)
        return index

    def _reembed_if_encoder_changed(self, encoder_name: str) -> None:
        stored_name = self._store.get_meta("encoder")
        if stored_name not in (None, encoder_name):
            keys = self._store.key_texts()
            log.info("encoder changed from %s to %s: re-embedding %d stored keys", stored_name, encoder_name, len(keys))
            vectors = self._embedder.encode([text for _, text in keys]) if keys else np.empty((0, self._embedder.dim))
            self._store.replace_vectors({key_id: v for (key_id, _), v in zip(keys, vectors, strict=True)})
        self._store.set_meta("encoder", encoder_name)


def _encode_page_token(seq: int) -> str:
    return f"after:{seq}"


def _decode_page_token(token: str) -> int:
    if not token:
        return 0
    prefix, _, number = token.partition(":")
    if prefix != "after" or not re.fullmatch(r"[0-9]{1,18}", number):  # ASCII digits that fit SQLite
        raise InvalidArgument(f"page_token {token!r} is not one this server issued; pass next_page_token as given")
    return int(number)
