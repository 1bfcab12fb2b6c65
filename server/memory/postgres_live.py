"""The live edits of a shared store (PostgreSQL), held in memory by each process that serves it.

Queries read edits from here, not from the database: no round trip per query, and queries keep being answered
while the database is down. The store keeps it in step with its own writes and with the writes it follows.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from server.types import Edit, EditKind, subject_key


@dataclass(frozen=True)
class StoredEdit:
    seq: int  # the store's insertion order
    edit: Edit
    key_ids: tuple[int, ...]


class LiveEdits:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._edits: dict[str, StoredEdit] = {}  # edit id → live edit (ids are unique across namespaces)
        self._by_key: dict[int, Edit] = {}
        self._by_kind: dict[tuple[str, EditKind], dict[str, StoredEdit]] = {}
        self._by_object: dict[tuple[str, str], dict[str, StoredEdit]] = {}  # (namespace, object_key) → edits
        self._by_subject: dict[tuple[str, str], dict[str, StoredEdit]] = {}  # (namespace, subject_key) → fact edits

    def update(self, edit_ids: Iterable[str], current: Sequence[StoredEdit]) -> None:
        """`edit_ids` changed; `current` is how those that are still stored are now (live or not)."""
        with self._lock:
            for edit_id in edit_ids:
                self._drop(edit_id)
            for stored in current:
                if stored.edit.live:
                    self._put(stored)

    def edits_for_keys(self, namespace: str, key_ids: Sequence[int]) -> dict[int, Edit]:
        """As EditStore.edits_for_keys: only the namespace's live edits."""
        with self._lock:
            found = {k: self._by_key.get(int(k)) for k in key_ids}
        return {k: e for k, e in found.items() if e is not None and e.namespace == namespace}

    def of_kind(self, namespace: str, kind: EditKind) -> list[Edit]:
        with self._lock:
            stored = sorted(self._by_kind.get((namespace, kind), {}).values(), key=lambda s: s.seq)
        return [s.edit for s in stored]

    def with_objects(self, namespace: str, object_keys: Sequence[str], limit: int) -> list[Edit]:
        """As EditStore.live_with_objects."""
        with self._lock:
            found = [s for key in set(object_keys) for s in self._by_object.get((namespace, key), {}).values()]
        return [s.edit for s in sorted(found, key=lambda s: s.seq, reverse=True)[:limit]]

    def about(self, namespace: str, subject: str) -> list[Edit]:
        """As EditStore.live_about."""
        with self._lock:
            stored = sorted(self._by_subject.get((namespace, subject_key(subject)), {}).values(), key=lambda s: s.seq)
        return [s.edit for s in stored]

    def counts(self) -> dict[str, int]:
        """namespace → live edits."""
        with self._lock:
            return dict(Counter(s.edit.namespace for s in self._edits.values()))

    def _put(self, stored: StoredEdit) -> None:
        edit = stored.edit
        self._edits[edit.id] = stored
        for key_id in stored.key_ids:
            self._by_key[key_id] = edit
        self._by_kind.setdefault((edit.namespace, edit.kind), {})[edit.id] = stored
        if key := edit.object_key:
            self._by_object.setdefault((edit.namespace, key), {})[edit.id] = stored
        if edit.kind is not EditKind.REGEX:
            self._by_subject.setdefault((edit.namespace, subject_key(edit.subject)), {})[edit.id] = stored

    def _drop(self, edit_id: str) -> None:
        stored = self._edits.pop(edit_id, None)
        if stored is None:
            return
        for key_id in stored.key_ids:
            self._by_key.pop(key_id, None)
        self._by_kind.get((stored.edit.namespace, stored.edit.kind), {}).pop(edit_id, None)
        if key := stored.edit.object_key:
            self._by_object.get((stored.edit.namespace, key), {}).pop(edit_id, None)
        self._by_subject.get((stored.edit.namespace, subject_key(stored.edit.subject)), {}).pop(edit_id, None)
