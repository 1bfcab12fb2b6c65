"""The durable record of what parametric editing did to the model: SQLite in WAL mode, FULL sync.

One row per (edit, module) delta, in the order the deltas were added; replaying them in that order
onto the original weights rebuilds the edited weights exactly. Likewise one row per addition (state an
edit attaches beside a module, additions.py), in the order they were made. A change is on disk before
the model changes, so a crash between the two is repaired by the replay at the next start.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from server.errors import FailedPrecondition
from server.parametric.additions import Addition
from server.parametric.deltas import WeightDelta
from server.sqlite import open_durable, storage_error, transaction

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS applications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    method     TEXT NOT NULL,
    options    TEXT NOT NULL,                     -- JSON, as applied
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS baked (
    namespace   TEXT NOT NULL,
    edit_id     TEXT NOT NULL,
    application INTEGER NOT NULL REFERENCES applications (id),
    in_gate     INTEGER NOT NULL,                 -- 1: the gate still routes to it
    PRIMARY KEY (namespace, edit_id)
);
CREATE TABLE IF NOT EXISTS deltas (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order deltas are added in
    namespace TEXT NOT NULL,
    edit_id   TEXT NOT NULL,
    module    TEXT NOT NULL,
    tensors   BLOB NOT NULL,                      -- safetensors bytes: u (and v for rank-one)
    FOREIGN KEY (namespace, edit_id) REFERENCES baked (namespace, edit_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS additions (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order additions were made in
    namespace TEXT NOT NULL,
    edit_id   TEXT NOT NULL,
    module    TEXT NOT NULL,
    kind      TEXT NOT NULL,                      -- the method that reads it, e.g. "grace"
    tensors   BLOB NOT NULL,                      -- safetensors bytes
    FOREIGN KEY (namespace, edit_id) REFERENCES baked (namespace, edit_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class BakedEdit:
    namespace: str
    edit_id: str
    application: int
    method: str
    in_gate: bool
    modules: tuple[str, ...]  # changed by its deltas, then those its additions are attached to
    created_at_unix_s: float


class Ledger:
    """Thread-safe: one connection behind a lock; every write is one transaction."""

    def __init__(self, path: Path, model_id: str, legacy_model_id: str | None = None) -> None:
        """`legacy_model_id` is the same weights' name under the earlier fingerprint scheme: a ledger that stored
        it is migrated to `model_id`."""
        self._lock = threading.Lock()
        self._db = open_durable(path, SCHEMA)
        try:
            self._check_model(model_id, legacy_model_id)
        except sqlite3.Error as exc:  # e.g. a full disk at start: one line naming the file, not a traceback
            raise storage_error(exc, path) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(
        self, namespace: str, method: str, options: dict[str, object], deltas: Sequence[WeightDelta], in_gate: bool,
        additions: Sequence[Addition] = (),
    ) -> int:
        """Stores one application's deltas and additions atomically; returns its id."""
        with self._lock, transaction(self._db):
            application = int(self._db.execute(
                "INSERT INTO applications (method, options, created_at) VALUES (?, ?, ?)",
                (method, json.dumps(options, sort_keys=True), time.time()),
            ).lastrowid or 0)
            for edit_id in dict.fromkeys([*(d.edit_id for d in deltas), *(a.edit_id for a in additions)]):
                self._db.execute(
                    "INSERT INTO baked (namespace, edit_id, application, in_gate) VALUES (?, ?, ?, ?)",
                    (namespace, edit_id, application, int(in_gate)),
                )
            self._db.executemany(
                "INSERT INTO deltas (namespace, edit_id, module, tensors) VALUES (?, ?, ?, ?)",
                [(namespace, d.edit_id, d.module, d.to_bytes()) for d in deltas],
            )
            self._db.executemany(
                "INSERT INTO additions (namespace, edit_id, module, kind, tensors) VALUES (?, ?, ?, ?, ?)",
                [(namespace, a.edit_id, a.module, a.kind, a.to_bytes()) for a in additions],
            )
        return application

    def remove(self, namespace: str, edit_id: str) -> BakedEdit:
        """Forgets one edit's deltas; returns what it was. FailedPrecondition if it is not baked."""
        with self._lock, transaction(self._db):
            baked = self._baked(namespace, edit_id)
            if baked is None:
                raise FailedPrecondition(f"edit {edit_id!r} in namespace {namespace!r} is not in the weights")
            self._db.execute("DELETE FROM baked WHERE namespace = ? AND edit_id = ?", (namespace, edit_id))
        return baked

    def get(self, namespace: str, edit_id: str) -> BakedEdit | None:
        with self._lock:
            return self._baked(namespace, edit_id)

    def baked_edits(self, namespace: str | None = None) -> list[BakedEdit]:
        with self._lock:
            rows = self._db.execute(
                "SELECT namespace, edit_id FROM baked WHERE ? IS NULL OR namespace = ? ORDER BY application, rowid",
                (namespace, namespace),
            ).fetchall()
            return [b for ns, e in rows if (b := self._baked(ns, e)) is not None]

    def deltas(self) -> Iterator[WeightDelta]:
        """Every stored delta, in the order it was added."""
        with self._lock:
            rows = self._db.execute("SELECT edit_id, module, tensors FROM deltas ORDER BY seq").fetchall()
        for edit_id, module, blob in rows:
            yield WeightDelta.from_bytes(edit_id, module, blob)

    def additions(self) -> Iterator[Addition]:
        """Every stored addition, in the order it was made."""
        with self._lock:
            rows = self._db.execute("SELECT edit_id, module, kind, tensors FROM additions ORDER BY seq").fetchall()
        for edit_id, module, kind, blob in rows:
            yield Addition.from_bytes(edit_id, module, kind, blob)

    def _baked(self, namespace: str, edit_id: str) -> BakedEdit | None:
        row = self._db.execute(
            "SELECT b.application, a.method, b.in_gate, a.created_at FROM baked b "
            "JOIN applications a ON a.id = b.application WHERE b.namespace = ? AND b.edit_id = ?",
            (namespace, edit_id),
        ).fetchone()
        if row is None:
            return None
        modules = tuple(m for table in ("deltas", "additions") for (m,) in self._db.execute(
            f"SELECT module FROM {table} WHERE namespace = ? AND edit_id = ? ORDER BY seq", (namespace, edit_id)
        ))
        return BakedEdit(namespace, edit_id, int(row[0]), str(row[1]), bool(row[2]), modules, float(row[3]))

    def _check_model(self, model_id: str, legacy_model_id: str | None) -> None:
        """Deltas only fit the weights they were computed on."""
        with self._lock, transaction(self._db):
            row = self._db.execute("SELECT value FROM meta WHERE name = 'model'").fetchone()
            (count,) = self._db.execute(
                "SELECT (SELECT COUNT(*) FROM deltas) + (SELECT COUNT(*) FROM additions)"
            ).fetchone()
            if row is not None and row[0] == legacy_model_id and legacy_model_id != model_id:
                log.warning("parametric ledger: migrating the model fingerprint %s (old scheme) to %s, the same "
                            "weights", legacy_model_id, model_id)
            elif row is not None and row[0] != model_id and count > 0:
                raise FailedPrecondition(
                    f"this data directory holds {count} parametric deltas for model {row[0]!r}, not {model_id!r}; "
                    "serve that model, or use another --data-dir"
                )
            if row is None or row[0] != model_id:  # written only on a change: a start writes nothing otherwise
                self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('model', ?)", (model_id,))
