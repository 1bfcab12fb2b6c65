"""The edit memory: the durable store, its FAISS index and the encoder, kept in agreement."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from server.errors import EditcacheError, InvalidArgument, StorageFailed
from server.interfaces import Deletion, EditPage, Embedder, EventPage, Replaced
from server.memory.ann import AnnSettings
from server.memory.index import MANIFEST, NamespaceIndex, saved_generation
from server.memory.store import EditStore, IndexChanges
from server.types import Edit, EditEvent, EditKind, EditSpec, Hit

if TYPE_CHECKING:
    from server.store.postgres import Listener

log = logging.getLogger(__name__)

# Each edit has several keys (prompt, paraphrases); fetch this many keys per wanted edit.
KEYS_PER_EDIT_SEARCHED = 4


class EditMemory:
    """Implements `server.interfaces.Memory` over `data_dir/edits.sqlite` and `data_dir/index/`."""

    def __init__(
        self, data_dir: Path, embedder: Embedder, encoder_name: str, max_edits_per_namespace: int = 0,
        approximate: AnnSettings | None = None, store: EditStore | None = None,
    ) -> None:
        """`store`: a shared store (PostgreSQL) instead of data_dir/edits.sqlite; the index files stay in data_dir."""
        self._embedder = embedder
        self._approximate = approximate  # when a namespace's index becomes approximate; None: ann.py's defaults
        self._max_edits_per_namespace = max_edits_per_namespace  # 0: no limit
        self._index_dir = data_dir / "index"
        store_path = data_dir / "edits.sqlite"
        indexed = saved_generation(self._index_dir)
        if store is None:
            _refuse_a_lost_store(store_path, self._index_dir, indexed)  # before opening it: a refusal writes nothing
            store = EditStore(store_path)
        self._store = store
        _refuse_an_older_store(store.location, self._store.generation(), self._index_dir, indexed)
        # Index changes follow store commits; the lock keeps the two in step for readers.
        self._lock = threading.RLock()
        self._reembed_if_encoder_changed(encoder_name)
        self._index = self._load_or_rebuild_index()

    # --- Memory protocol ----------------------------------------------------------------

    def add(
        self, namespace: str, specs: Sequence[EditSpec], replaces: Sequence[Replaced] = (), token_name: str = "",
        vectors: Sequence[np.ndarray] | None = None,
    ) -> list[Edit]:
        vectors = self._embed(specs) if vectors is None else vectors
        with self._lock:
            # Committed to disk here.
            edits, changes = self._store.insert(
                namespace, specs, vectors, self._max_edits_per_namespace, replaces, token_name
            )
            self._apply(namespace, changes)
        return edits

    def update(
        self, namespace: str, edit_id: str, spec: EditSpec, token_name: str = "", vectors: np.ndarray | None = None
    ) -> Edit:
        if vectors is None:
            (vectors,) = self._embed([spec])
        with self._lock:
            edit, changes = self._store.update(namespace, edit_id, spec, vectors, token_name)
            self._apply(namespace, changes)
        return edit

    def history(self, namespace: str, edit_id: str) -> tuple[Edit, list[Edit]]:
        return self._store.history(namespace, edit_id)

    def same_subject(self, namespace: str, subjects: Sequence[str]) -> dict[str, list[Edit]]:
        return self._store.live_with_subjects(namespace, subjects)

    def facts_about(self, namespace: str, subject: str) -> list[Edit]:
        return self._store.live_about(namespace, subject)

    def live_of_kind(self, namespace: str, kind: EditKind) -> list[Edit]:
        return self._store.live_of_kind(namespace, kind)

    def with_objects(self, namespace: str, object_keys: Sequence[str], limit: int) -> list[Edit]:
        return self._store.live_with_objects(namespace, object_keys, limit)

    def events(self, namespace: str, page_size: int, page_token: str, edit_id: str | None = None) -> EventPage:
        events, next_seq = self._store.events(namespace, _decode_page_token(page_token), page_size, edit_id)
        return EventPage(events, "" if next_seq is None else _encode_page_token(next_seq))

    def record(self, events: Sequence[EditEvent]) -> None:
        self._store.record(events)

    def get(self, namespace: str, edit_id: str) -> Edit:
        return self._store.get(namespace, edit_id)

    def page(self, namespace: str, page_size: int, page_token: str) -> EditPage:
        after = _decode_page_token(page_token)
        edits, next_seq, total = self._store.page(namespace, after, page_size)
        return EditPage(edits, "" if next_seq is None else _encode_page_token(next_seq), total)

    def wait_for_index(self, timeout_s: float | None = None) -> bool:
        """Waits for background index builds (a large namespace's approximate index) to finish; False on timeout."""
        return self._index.wait_for_builds(timeout_s)

    def edit_counts(self) -> dict[str, int]:
        """namespace → edits stored."""
        return self._store.count_edits_by_namespace()

    def delete(self, namespace: str, edit_id: str, token_name: str = "") -> Deletion:
        with self._lock:
            edit, restored, changes = self._store.delete(namespace, edit_id, token_name)
            self._apply(namespace, changes)
        return Deletion(edit, restored)

    def search(self, namespace: str, query_vector: np.ndarray, k: int) -> list[Hit]:
        with self._lock:
            n_keys = self._index.size(namespace)
            wanted = k * KEYS_PER_EDIT_SEARCHED
            while True:  # widen until k distinct edits, in case one edit's many keys fill the top
                key_ids, sims = self._index.search(namespace, query_vector, wanted)
                edits = self._store.edits_for_keys(namespace, key_ids.tolist())
                hits: dict[str, Hit] = {}
                for key_id, sim in zip(key_ids.tolist(), sims.tolist(), strict=True):  # best first
                    edit = edits.get(key_id)
                    if edit is not None and edit.id not in hits:
                        hits[edit.id] = Hit(edit, float(sim))
                if len(hits) >= k or wanted >= n_keys:
                    return list(hits.values())[:k]
                wanted *= 4

    def _embed(self, specs: Sequence[EditSpec]) -> list[np.ndarray]:
        """(n_keys, dim) vectors of each spec's key texts (none for a regex patch)."""
        texts = [s.key_texts() for s in specs]
        flat = self._embedder.encode([t for group in texts for t in group])  # (total keys, dim)
        bounds = np.cumsum([0, *map(len, texts)])
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _apply(self, namespace: str, changes: IndexChanges) -> None:
        """Brings the index in line with a committed store write (under the lock)."""
        if changes.add_ids:
            self._index.add(namespace, np.asarray(changes.add_ids), np.stack(changes.add_vectors))
        if changes.remove_ids:
            self._index.remove(namespace, changes.remove_ids)

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Saves the index so the next start can skip the rebuild; closing does not depend on that save."""
        with self._lock:
            self._index.close()  # no build swaps an index in after this save
            self._save_index(self._index)
            self._store.close()

    def _save_index(self, index: NamespaceIndex) -> None:
        try:
            index.save(self._index_dir, self._store.generation())
        except (OSError, RuntimeError, EditcacheError) as exc:  # a full disk; faiss raises RuntimeError
            log.warning("edit index not saved to %s (%s): the next start rebuilds it from the store",
                        self._index_dir, exc)

    def _load_or_rebuild_index(self) -> NamespaceIndex:
        generation = self._store.generation()
        index = NamespaceIndex.load(self._index_dir, self._embedder.dim, generation, self._approximate)
        if index is not None and not self._agrees_with_store(index):
            index = None
        if index is not None:
            log.info("edit index loaded from %s (%d vectors)", self._index_dir, index.size())
            return index
        log.info("rebuilding the edit index from the store (%d vectors)", self._store.count_keys())
        by_namespace: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        for key in self._store.iter_keys():
            ids, vectors = by_namespace.setdefault(key.namespace, ([], []))
            ids.append(key.key_id)
            vectors.append(key.vector)
        index = NamespaceIndex(self._embedder.dim, self._approximate)
        for namespace, (ids, vectors) in by_namespace.items():
            index.add(namespace, np.asarray(ids), np.stack(vectors))  # (n, dim)
        log.info("edit index rebuilt: %d vectors in %d namespaces", index.size(), len(by_namespace))
        self._save_index(index)
        return index

    def _agrees_with_store(self, index: NamespaceIndex) -> bool:
        """Whether each namespace's index holds as many vectors as the store has keys there: files whose
        checksums match can still be assigned to the wrong namespaces in the manifest."""
        counts = self._store.keys_per_namespace()
        if index.size() == sum(counts.values()) and all(index.size(ns) == n for ns, n in counts.items()):
            return True
        log.warning("index files at %s disagree with the store on vectors per namespace", self._index_dir)
        return False

    def _reembed_if_encoder_changed(self, encoder_name: str) -> None:
        stored_name = self._store.get_meta("encoder")
        if stored_name not in (None, encoder_name):
            keys = self._store.key_texts()
            log.info("encoder changed from %s to %s: re-embedding %d stored keys", stored_name, encoder_name, len(keys))
            vectors = self._embedder.encode([text for _, text in keys]) if keys else np.empty((0, self._embedder.dim))
            self._store.replace_vectors({key_id: v for (key_id, _), v in zip(keys, vectors, strict=True)})
        if stored_name != encoder_name:  # no write when unchanged: a server on a full disk still starts and reads
            self._store.set_meta("encoder", encoder_name)

    # --- following a shared store ---------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Whether other processes write the store too (PostgreSQL): `follow` brings their writes in."""
        return self._store.shared

    def listen(self) -> Listener:
        """Wakes a follower when another process writes the shared store."""
        return self._store.listen()

    def follow(self) -> list[Edit]:
        """Applies to the index the store's writes this process has not applied yet (other processes'); returns the
        edits they made live, for the gate's cache. Each batch is applied under the lock, so a search sees a
        write whole or not at all."""
        live: list[Edit] = []
        while True:
            with self._lock:
                followed = self._store.follow()
                for namespace, changes in followed.index.items():  # every touched key out, then the live ones in
                    if changes.remove_ids:
                        self._index.remove(namespace, changes.remove_ids)
                    if changes.add_ids:
                        self._index.add(namespace, np.asarray(changes.add_ids), np.stack(changes.add_vectors))
            live.extend(followed.live)
            if followed.complete:
                return live


def _encode_page_token(seq: int) -> str:
    return f"after:{seq}"


def _decode_page_token(token: str) -> int:
    if not token:
        return 0
    prefix, _, number = token.partition(":")
    if prefix != "after" or not re.fullmatch(r"[0-9]{1,18}", number):  # ASCII digits that fit SQLite
        raise InvalidArgument(f"page_token {token!r} is not one this server issued; pass next_page_token as given")
    return int(number)


def _refuse_a_lost_store(store_path: Path, index_dir: Path, indexed: int | None) -> None:
    """A missing or empty store where the index manifest records writes was lost or replaced: starting would
    serve an empty memory as if those edits had never been acknowledged."""
    if not indexed:
        return
    state = "missing" if not store_path.exists() else "empty" if store_path.stat().st_size == 0 else None
    if state is not None:
        raise StorageFailed(
            f"{store_path} is {state} but {index_dir / MANIFEST} records {indexed} writes to it: restore it from a "
            f"backup; to start with no edits on purpose, delete {index_dir} too (README: Operations)"
        )


def _refuse_an_older_store(store_path: Path | str, generation: int, index_dir: Path, indexed: int | None) -> None:
    """The store only moves forward; one behind the index was replaced by an older copy or lost its WAL file."""
    if indexed is not None and generation < indexed:
        raise StorageFailed(
            f"{store_path} is at write {generation} but {index_dir / MANIFEST} records {indexed}: acknowledged "
            f"edits are missing from it; restore it (and its -wal file) from a backup, or delete {index_dir} to "
            "serve it as it is (README: Operations)"
        )
