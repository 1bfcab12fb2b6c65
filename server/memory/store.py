"""The durable edit log, each write committed before it returns: SQLite in WAL mode by default, or a PostgreSQL
database shared by several server processes (server/store/).

Every edit is stored with the embeddings of its key texts, so the FAISS index can
always be rebuilt from the store alone, without the encoder.

The schema is versioned. SQLite (PRAGMA user_version): SCHEMA is version 1 as first released, and each entry of
MIGRATIONS takes a store one version further, in one transaction, so a store written by any earlier release opens.
PostgreSQL (table schema_version): POSTGRES_MIGRATIONS, whose version 1 is SQLite's version 2 plus the change log.

A shared store records each write in its change log (table changes), by generation, and notifies; each process
follows the others' writes from there (`follow`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from server.errors import EditNotFound, FailedPrecondition, ResourceExhausted
from server.interfaces import Replaced
from server.memory.postgres_live import LiveEdits, StoredEdit
from server.store import Connection, Schema, open_database
from server.types import Edit, EditAction, EditEvent, EditKind, EditSpec, object_key, subject_key

if TYPE_CHECKING:
    from server.store.postgres import Listener

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS edits (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order, for paging
    id          TEXT NOT NULL UNIQUE,
    namespace   TEXT NOT NULL,
    subject     TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    target_new  TEXT NOT NULL,
    target_true TEXT,
    paraphrases TEXT NOT NULL,                      -- JSON list of strings
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS edits_by_namespace ON edits (namespace, seq);
CREATE TABLE IF NOT EXISTS keys (
    key_id    INTEGER PRIMARY KEY AUTOINCREMENT,     -- the FAISS id
    edit_seq  INTEGER NOT NULL REFERENCES edits (seq) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    text      TEXT NOT NULL,
    vector    BLOB NOT NULL                          -- float32, unit length
);
CREATE INDEX IF NOT EXISTS keys_by_edit ON keys (edit_seq);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Version 2 (issue 26): edit kinds and their fields, versions and supersession; existing edits become version 1
# of a MODIFY edit, live. `superseded_by` is '' for a live edit. `subject_key` is the normalised subject that
# supersession looks edits up by.
MIGRATIONS: tuple[str, ...] = (
    """
    ALTER TABLE edits ADD COLUMN kind TEXT NOT NULL DEFAULT 'modify';
    ALTER TABLE edits ADD COLUMN pattern TEXT NOT NULL DEFAULT '';
    ALTER TABLE edits ADD COLUMN replacement TEXT NOT NULL DEFAULT '';
    ALTER TABLE edits ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE edits ADD COLUMN supersedes TEXT NOT NULL DEFAULT '';
    ALTER TABLE edits ADD COLUMN superseded_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE edits ADD COLUMN updated_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE edits ADD COLUMN subject_key TEXT NOT NULL DEFAULT '';
    UPDATE edits SET updated_at = created_at, subject_key = subject_key(subject);
    CREATE INDEX edits_by_subject ON edits (namespace, subject_key) WHERE superseded_by = '';
    CREATE INDEX edits_live ON edits (namespace, superseded_by, seq);
    CREATE INDEX edits_by_kind ON edits (namespace, kind, seq) WHERE superseded_by = '';  -- regex patches per answer
    CREATE TABLE edit_versions (                     -- earlier versions of an id, replaced by UpdateEdit
        edit_id  TEXT NOT NULL,
        version  INTEGER NOT NULL,
        fields   TEXT NOT NULL,                      -- the Edit as JSON (edit_to_json)
        PRIMARY KEY (edit_id, version)
    );
    CREATE TABLE edit_events (                       -- the audit log
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        at         REAL NOT NULL,
        namespace  TEXT NOT NULL,
        token_name TEXT NOT NULL,
        action     TEXT NOT NULL,
        edit_id    TEXT NOT NULL,
        before     TEXT NOT NULL,                    -- JSON, '' for none
        after      TEXT NOT NULL
    );
    CREATE INDEX edit_events_by_namespace ON edit_events (namespace, seq);
    """,
    # Version 3 (issue 24): other names of the subject, each a key text; existing edits have none.
    """
    ALTER TABLE edits ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]';  -- JSON list of strings
    """,
    # Version 4 (issue 24): the new object, normalised as subjects are, that a query naming it finds the edit by
    # (reverse questions: "Who is the son of Babur?" after "Who is Nebaioth's father?" → "Babur").
    """
    ALTER TABLE edits ADD COLUMN object_key TEXT NOT NULL DEFAULT '';
    UPDATE edits SET object_key = object_key(target_new) WHERE kind IN ('modify', 'insert');
    CREATE INDEX edits_by_object ON edits (namespace, object_key) WHERE superseded_by = '';
    """,
    # Version 5: erase edits keyed by the answer they erase, so that the erased fact asked backwards is refused too.
    # PostgreSQL needs no entry: its object lookups read keys its processes compute (postgres_live.py).
    """
    UPDATE edits SET object_key = object_key(target_true) WHERE kind = 'erase' AND target_true IS NOT NULL;
    """,
)
SCHEMA_VERSION = 1 + len(MIGRATIONS)

# PostgreSQL's versions. A change of tables is a migration here and in MIGRATIONS.
POSTGRES_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE edits (
        seq           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        id            TEXT NOT NULL UNIQUE,
        namespace     TEXT NOT NULL,
        subject       TEXT NOT NULL,
        prompt        TEXT NOT NULL,
        target_new    TEXT NOT NULL,
        target_true   TEXT,
        paraphrases   TEXT NOT NULL,
        created_at    DOUBLE PRECISION NOT NULL,
        kind          TEXT NOT NULL DEFAULT 'modify',
        pattern       TEXT NOT NULL DEFAULT '',
        replacement   TEXT NOT NULL DEFAULT '',
        version       BIGINT NOT NULL DEFAULT 1,
        supersedes    TEXT NOT NULL DEFAULT '',
        superseded_by TEXT NOT NULL DEFAULT '',
        updated_at    DOUBLE PRECISION NOT NULL DEFAULT 0,
        subject_key   TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX edits_by_namespace ON edits (namespace, seq);
    CREATE INDEX edits_by_subject ON edits (namespace, subject_key) WHERE superseded_by = '';
    CREATE INDEX edits_live ON edits (namespace, superseded_by, seq);
    CREATE INDEX edits_by_kind ON edits (namespace, kind, seq) WHERE superseded_by = '';
    CREATE TABLE keys (
        key_id    BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        edit_seq  BIGINT NOT NULL REFERENCES edits (seq) ON DELETE CASCADE,
        namespace TEXT NOT NULL,
        text      TEXT NOT NULL,
        vector    BYTEA NOT NULL
    );
    CREATE INDEX keys_by_edit ON keys (edit_seq);
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE edit_versions (
        edit_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        fields  TEXT NOT NULL,
        PRIMARY KEY (edit_id, version)
    );
    CREATE TABLE edit_events (
        seq        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at         DOUBLE PRECISION NOT NULL,
        namespace  TEXT NOT NULL,
        token_name TEXT NOT NULL,
        action     TEXT NOT NULL,
        edit_id    TEXT NOT NULL,
        before     TEXT NOT NULL,
        after      TEXT NOT NULL
    );
    CREATE INDEX edit_events_by_namespace ON edit_events (namespace, seq);
    CREATE TABLE changes (
        generation BIGINT PRIMARY KEY,
        namespace  TEXT NOT NULL,
        edit_ids   TEXT NOT NULL,
        key_ids    TEXT NOT NULL
    )
    """,
    "ALTER TABLE edits ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]'",  # SQLite's version 3
    # SQLite's version 4. A PostgreSQL store answers object lookups from its processes' in-memory copy of the live
    # edits (postgres_live.py), which computes object_key itself: the column keeps the two dialects' tables alike, and
    # is never read here (erase rows written before SQLite's version 5 keep '').
    "ALTER TABLE edits ADD COLUMN object_key TEXT NOT NULL DEFAULT ''",
)

EDIT_STORE = Schema(
    name="edit_store", title="the edit store", sqlite=SCHEMA, sqlite_migrations=MIGRATIONS,
    sqlite_functions={"subject_key": subject_key, "object_key": object_key}, postgres=POSTGRES_MIGRATIONS,
)
FOLLOW_BATCH = 1000  # change log rows per `follow` call
IN_CHUNK = 5000  # ids per IN (...) list, under both backends' limits on bound parameters

EDIT_FIELDS = (
    "id", "namespace", "subject", "prompt", "target_new", "target_true", "paraphrases", "created_at",
    "kind", "pattern", "replacement", "version", "supersedes", "superseded_by", "updated_at", "aliases",
)
EDIT_COLUMNS = ", ".join(EDIT_FIELDS)
LIVE = "superseded_by = ''"
# Keys of live edits: only those are in the index (a superseded edit keeps its keys, for when it is restored).
LIVE_KEY = f"edit_seq IN (SELECT seq FROM edits WHERE {LIVE})"


@dataclass
class IndexChanges:
    """What a store write changed in one namespace's index: key vectors to add, then key ids to remove."""

    add_ids: list[int] = field(default_factory=list)
    add_vectors: list[np.ndarray] = field(default_factory=list)  # (dim,) each
    remove_ids: list[int] = field(default_factory=list)

    def add(self, key_ids: Sequence[int], vectors: np.ndarray) -> None:
        self.add_ids.extend(key_ids)
        self.add_vectors.extend(vectors[: len(key_ids)])

    def add_keys(self, keys: Sequence[tuple[int, np.ndarray]]) -> None:
        for key_id, vector in keys:
            self.add_ids.append(key_id)
            self.add_vectors.append(vector)


@dataclass(frozen=True)
class StoredKey:
    key_id: int
    namespace: str
    vector: np.ndarray  # (dim,)


@dataclass
class Followed:
    """Other processes' writes to a shared store, as `follow` found them."""

    generation: int  # followed up to here
    # Per namespace: remove `remove_ids` (every key the writes touched) first, then add the live ones among them.
    index: dict[str, IndexChanges]
    live: list[Edit]  # touched edits that are live and have keys (the gate's cache wants them)
    complete: bool  # False: more writes wait; call again


@dataclass(frozen=True)
class _Written:
    """A shared store's write, from inside its transaction to after its commit."""

    generation: int
    edit_ids: list[str]
    current: list[StoredEdit]


class EditStore:
    """Thread-safe (the database serialises calls); writes are single transactions.

    Over a shared database other processes write too. This process follows their writes by generation (`follow`),
    and answers queries (`edits_for_keys`, `live_of_kind`) from its copy of the live edits, kept in step with its
    own writes and the followed ones: no round trip per query, and queries are answered while the database is down.
    """

    def __init__(self, location: Path | str) -> None:
        """`location`: an SQLite file, or a postgresql:// URL."""
        self._db = open_database(location, EDIT_STORE)
        self.location = self._db.location
        self.shared = self._db.shared
        self._follow_lock = threading.Lock()
        self._live: LiveEdits | None = None
        self._followed = 0
        if self.shared:
            # The generation first: what the copy loads next is at least as new, and following from here is
            # idempotent over what it already holds.
            self._followed = self._stored_generation()
            self._live = self._load_live()

    def close(self) -> None:
        self._db.close()

    # --- writes -------------------------------------------------------------------------

    def insert(
        self, namespace: str, specs: Sequence[EditSpec], vectors: Sequence[np.ndarray], max_edits: int = 0,
        replaces: Sequence[Replaced] = (), token_name: str = "",
    ) -> tuple[list[Edit], IndexChanges]:
        """Stores the edits and their key vectors ((n_keys, dim) per spec) atomically, with their audit events.

        `replaces[i]` names what spec i supersedes: the id of a live edit of the namespace, the index of an earlier
        spec of this batch, or None. An edit to supersede that is no longer live (deleted meanwhile) is left alone.
        Returns the edits as now stored, in order, and the index changes. With `max_edits` > 0, a batch that would
        take the namespace past that many live edits is refused whole.
        """
        now = time.time()
        replaces = list(replaces) or [None] * len(specs)
        edits: list[Edit] = []
        touched: list[str] = []  # ids of the edits added or superseded
        changes = IndexChanges()
        with self._db.writing() as db:
            if max_edits > 0:
                self._check_room(db, namespace, sum(r is None for r in replaces), max_edits)
            for spec, spec_vectors, replaced in zip(specs, vectors, replaces, strict=True):
                old_id = edits[replaced].id if isinstance(replaced, int) else replaced
                old = self._find(db, namespace, old_id) if old_id else None
                old = old if old is not None and old[1].live else None
                edit = Edit(
                    id=uuid.uuid4().hex, namespace=namespace, subject=spec.subject, prompt=spec.prompt,
                    target_new=spec.target_new, target_true=spec.target_true,
                    paraphrases=tuple(spec.paraphrases), created_at_unix_s=now, kind=spec.kind,
                    pattern=spec.pattern, replacement=spec.replacement, updated_at_unix_s=now,
                    supersedes=old[1].id if old else "", aliases=tuple(spec.aliases),
                )
                changes.add(self._insert_keys(db, self._insert_row(db, edit), edit, spec_vectors), spec_vectors)
                self._log(db, now, token_name, EditAction.ADD, None, edit)
                if old is not None:
                    old_seq, old_edit = old
                    db.execute("UPDATE edits SET superseded_by = ? WHERE seq = ?", (edit.id, old_seq))
                    changes.remove_ids.extend(self._key_ids(db, old_seq))
                    superseded = replace(old_edit, superseded_by=edit.id)
                    self._log(db, now, token_name, EditAction.SUPERSEDE, old_edit, superseded)
                    edits = [superseded if e.id == old_edit.id else e for e in edits]
                    touched.append(old_edit.id)
                edits.append(edit)
                touched.append(edit.id)
            written = self._written(db, namespace, touched, changes)
        self._seen(written)
        return edits, changes

    def update(
        self, namespace: str, edit_id: str, spec: EditSpec, vectors: np.ndarray, token_name: str = ""
    ) -> tuple[Edit, IndexChanges]:
        """Replaces a live edit's fields and key vectors ((n_keys, dim)), keeping its id: the version goes up by one
        and the old version is kept in its history."""
        now = time.time()
        changes = IndexChanges()
        with self._db.writing() as db:
            seq, old = self._get_row(db, namespace, edit_id)
            if not old.live:
                raise FailedPrecondition(
                    f"edit {edit_id} was superseded by edit {old.superseded_by}: update that one, or delete it to "
                    "bring this one back"
                )
            new = replace(
                old, subject=spec.subject, prompt=spec.prompt, target_new=spec.target_new,
                target_true=spec.target_true, paraphrases=tuple(spec.paraphrases), kind=spec.kind,
                pattern=spec.pattern, replacement=spec.replacement, version=old.version + 1, updated_at_unix_s=now,
                aliases=tuple(spec.aliases),
            )
            db.execute(
                "INSERT INTO edit_versions (edit_id, version, fields) VALUES (?, ?, ?)",
                (old.id, old.version, edit_to_json(old)),
            )
            changes.remove_ids.extend(self._key_ids(db, seq))
            db.execute("DELETE FROM keys WHERE edit_seq = ?", (seq,))
            db.execute(
                f"UPDATE edits SET ({EDIT_COLUMNS}, subject_key, object_key) = "
                f"({', '.join('?' * (len(EDIT_FIELDS) + 2))}) WHERE seq = ?",
                (*_edit_to_row(new), subject_key(new.subject), new.object_key, seq),
            )
            changes.add(self._insert_keys(db, seq, new, vectors), vectors)
            self._log(db, now, token_name, EditAction.UPDATE, old, new)
            written = self._written(db, namespace, [new.id], changes)
        self._seen(written)
        return new, changes

    def delete(self, namespace: str, edit_id: str, token_name: str = "") -> tuple[Edit, Edit | None, IndexChanges]:
        """Removes the edit, its keys and its earlier versions; returns the edit as it was, the edit it had
        superseded (live again: an undo), and the index changes.

        A superseded edit can be deleted too: it leaves the history, and its chain closes over the gap."""
        now = time.time()
        changes = IndexChanges()
        restored = None
        with self._db.writing() as db:
            seq, edit = self._get_row(db, namespace, edit_id)
            if edit.live:
                changes.remove_ids.extend(self._key_ids(db, seq))
                previous = self._find(db, namespace, edit.supersedes) if edit.supersedes else None
                if previous is not None:
                    previous_seq, previous_edit = previous
                    db.execute("UPDATE edits SET superseded_by = '' WHERE seq = ?", (previous_seq,))
                    restored = replace(previous_edit, superseded_by="")
                    changes.add_keys(self._keys_with_vectors(db, previous_seq))
                    self._log(db, now, token_name, EditAction.RESTORE, previous_edit, restored)
            else:
                db.execute("UPDATE edits SET supersedes = ? WHERE id = ? AND namespace = ?",
                           (edit.supersedes, edit.superseded_by, namespace))
                if edit.supersedes:
                    db.execute("UPDATE edits SET superseded_by = ? WHERE id = ? AND namespace = ?",
                               (edit.superseded_by, edit.supersedes, namespace))
            db.execute("DELETE FROM edits WHERE seq = ?", (seq,))
            db.execute("DELETE FROM edit_versions WHERE edit_id = ?", (edit.id,))
            self._log(db, now, token_name, EditAction.DELETE, edit, None)
            written = self._written(db, namespace, [edit.id, *([restored.id] if restored else [])], changes)
        self._seen(written)
        return edit, restored, changes

    def record(self, events: Sequence[EditEvent]) -> None:
        """Appends events of changes made elsewhere (the parametric ledger's) to the audit log."""
        now = time.time()
        with self._db.writing() as db:
            db.executemany(
                "INSERT INTO edit_events (at, namespace, token_name, action, edit_id, before, after) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e.at_unix_s or now, e.namespace, e.token_name, e.action.value, e.edit_id, e.before_json,
                  e.after_json) for e in events],
            )

    def set_meta(self, name: str, value: str) -> None:
        with self._db.writing() as db:
            db.execute("INSERT INTO meta (name, value) VALUES (?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))

    def replace_vectors(self, vectors: dict[int, np.ndarray]) -> None:
        """Overwrites key vectors by key id (after a change of encoder). Not in a shared store's change log: the
        other processes must restart with the new encoder anyway (their queries are encoded by the old one)."""
        with self._db.writing() as db:
            db.executemany(
                "UPDATE keys SET vector = ? WHERE key_id = ?",
                [(np.asarray(v, dtype=np.float32).tobytes(), k) for k, v in vectors.items()],
            )
            generation = self._bump_generation(db)
        self._seen(_Written(generation, [], []))

    # --- reads --------------------------------------------------------------------------

    def get(self, namespace: str, edit_id: str) -> Edit:
        """A live or superseded edit."""
        with self._db.reading() as db:
            return self._get_row(db, namespace, edit_id)[1]

    def history(self, namespace: str, edit_id: str) -> tuple[Edit, list[Edit]]:
        """The edit, and what came before it newest first: its earlier versions, then the edit it superseded with
        that one's earlier versions, and so on down the chain."""
        with self._db.reading() as db:
            _, edit = self._get_row(db, namespace, edit_id)
            earlier: list[Edit] = []
            current, seen = edit, {edit.id}
            while True:
                earlier.extend(
                    edit_from_json(str(fields)) for (fields,) in db.execute(
                        "SELECT fields FROM edit_versions WHERE edit_id = ? ORDER BY version DESC", (current.id,)
                    )
                )
                found = self._find(db, namespace, current.supersedes) if current.supersedes not in seen else None
                if found is None:
                    return edit, earlier
                current = found[1]
                seen.add(current.id)
                earlier.append(current)

    def live_with_subjects(self, namespace: str, subjects: Iterable[str]) -> dict[str, list[Edit]]:
        """Each given subject → the namespace's live fact edits (every kind but REGEX) whose subject is the same once
        normalised (`subject_key`), oldest first; subjects with none are absent."""
        wanted = {s: subject_key(s) for s in subjects}
        keys = sorted(set(wanted.values()))
        found: dict[str, list[Edit]] = {}
        with self._db.reading() as db:
            for start in range(0, len(keys), 500):  # under SQLite's limit on bound parameters
                chunk = keys[start : start + 500]
                rows = db.execute(
                    f"SELECT subject_key, {EDIT_COLUMNS} FROM edits {self._db.indexed_by('edits_by_subject')} "
                    f"WHERE namespace = ? AND {LIVE} AND kind != ? "
                    f"AND subject_key IN ({','.join('?' * len(chunk))}) ORDER BY seq",
                    (namespace, EditKind.REGEX.value, *chunk),
                )
                for row in rows:
                    found.setdefault(str(row[0]), []).append(_edit_from_row(row[1:]))
        return {s: found[key] for s, key in wanted.items() if key in found}

    def live_about(self, namespace: str, subject: str) -> list[Edit]:
        """`live_with_subjects` for one subject, as a query reads it: a shared store answers from its in-memory copy
        (no round trip per query, answered while the database is down); writes read the database."""
        if self._live is not None:
            return self._live.about(namespace, subject)
        return self.live_with_subjects(namespace, [subject]).get(subject, [])

    def live_with_objects(self, namespace: str, object_keys: Sequence[str], limit: int) -> list[Edit]:
        """The namespace's newest `limit` live edits whose `object_key` is one of `object_keys` (a query's
        `named_keys`: a few hundred at most), newest first."""
        keys = sorted(set(object_keys) - {""})
        if not keys or limit <= 0:
            return []
        if self._live is not None:
            return self._live.with_objects(namespace, keys, limit)
        with self._db.reading() as db:
            # seq unindexed, so that the planner looks the keys up in edits_by_object rather than walking the
            # namespace's live edits in seq order (37 ms at 100,000 edits, against 0.1)
            rows = db.execute(
                f"SELECT {EDIT_COLUMNS} FROM edits WHERE namespace = ? AND {LIVE} "
                f"AND object_key IN ({','.join('?' * len(keys))}) ORDER BY {self._db.unindexed}seq DESC LIMIT ?",
                (namespace, *keys, limit),
            ).fetchall()
        return [_edit_from_row(row) for row in rows]

    def live_of_kind(self, namespace: str, kind: EditKind) -> list[Edit]:
        """The namespace's live edits of one kind, oldest first (e.g. the regex patches its answers go through)."""
        if self._live is not None:
            return self._live.of_kind(namespace, kind)
        with self._db.reading() as db:
            rows = db.execute(
                f"SELECT {EDIT_COLUMNS} FROM edits WHERE namespace = ? AND {LIVE} AND kind = ? ORDER BY seq",
                (namespace, kind.value),
            ).fetchall()
        return [_edit_from_row(r) for r in rows]

    def events(
        self, namespace: str, after_seq: int, limit: int, edit_id: str | None = None
    ) -> tuple[list[EditEvent], int | None]:
        """Up to `limit` audit events of the namespace after `after_seq`, oldest first, and the seq to continue
        from (None at the end); only `edit_id`'s when given."""
        where = "namespace = ? AND seq > ?" + (" AND edit_id = ?" if edit_id else "")
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT seq, at, namespace, token_name, action, edit_id, before, after FROM edit_events "
                f"WHERE {where} ORDER BY seq LIMIT ?",
                (namespace, after_seq, *([edit_id] if edit_id else []), limit + 1),
            ).fetchall()
        events = [
            EditEvent(namespace=str(ns), token_name=str(token), action=EditAction(action), edit_id=str(id_),
                      before_json=str(before), after_json=str(after), at_unix_s=float(at), seq=int(seq))
            for seq, at, ns, token, action, id_, before, after in rows[:limit]
        ]
        return events, (events[-1].seq if len(rows) > limit else None)

    def page(self, namespace: str, after_seq: int, limit: int) -> tuple[list[Edit], int | None, int]:
        """Up to `limit` live edits after `after_seq`, oldest first.

        Also returns the seq to continue from (None at the end) and the namespace's total.
        """
        with self._db.reading() as db:
            rows = db.execute(
                f"SELECT seq, {EDIT_COLUMNS} FROM edits WHERE namespace = ? AND {LIVE} AND seq > ? ORDER BY seq "
                "LIMIT ?",
                (namespace, after_seq, limit + 1),
            ).fetchall()
            (total,) = db.execute(
                f"SELECT COUNT(*) FROM edits WHERE namespace = ? AND {LIVE}", (namespace,)
            ).fetchone()
        more = len(rows) > limit
        rows = rows[:limit]
        return [_edit_from_row(r[1:]) for r in rows], (rows[-1][0] if more else None), int(total)

    def edits_for_keys(self, namespace: str, key_ids: Sequence[int]) -> dict[int, Edit]:
        """The live edit each key id belongs to; ids no longer stored or live, or of another namespace, are absent.

        The namespace test is the isolation promise itself: it holds even if the index hands back another
        namespace's key ids (a damaged or swapped index file).
        """
        if not key_ids:
            return {}
        if self._live is not None:
            return self._live.edits_for_keys(namespace, key_ids)
        marks = ",".join("?" * len(key_ids))
        hint = self._db.unindexed
        with self._db.reading() as db:
            rows = db.execute(
                f"SELECT k.key_id, {', '.join('e.' + c for c in EDIT_FIELDS)} "
                f"FROM keys k JOIN edits e ON e.seq = k.edit_seq "
                # The unary + keeps SQLite on the key ids' primary key: without it the planner walks the whole
                # namespace through edits_by_namespace (800 ms for 32 keys at 100k edits, against 0.3 ms).
                f"WHERE k.key_id IN ({marks}) AND {hint}k.namespace = ? AND {hint}e.namespace = ? AND e.{LIVE}",
                [*(int(k) for k in key_ids), namespace, namespace],
            ).fetchall()
        return {row[0]: _edit_from_row(row[1:]) for row in rows}

    def iter_keys(self, batch: int = 10_000) -> Iterator[StoredKey]:
        last = 0
        while True:
            with self._db.reading() as db:
                rows = db.execute(
                    f"SELECT key_id, namespace, vector FROM keys WHERE key_id > ? AND {LIVE_KEY} ORDER BY key_id "
                    "LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for key_id, namespace, blob in rows:
                yield StoredKey(key_id, namespace, np.frombuffer(blob, dtype=np.float32))
            last = rows[-1][0]

    def key_texts(self) -> list[tuple[int, str]]:
        with self._db.reading() as db:
            return [(int(k), t) for k, t in db.execute("SELECT key_id, text FROM keys ORDER BY key_id")]

    def keys_per_namespace(self) -> dict[str, int]:
        with self._db.reading() as db:
            rows = db.execute(
                f"SELECT namespace, COUNT(*) FROM keys WHERE {LIVE_KEY} GROUP BY namespace"
            ).fetchall()
        return {str(ns): int(n) for ns, n in rows}

    def count_keys(self) -> int:
        with self._db.reading() as db:
            return int(db.execute(f"SELECT COUNT(*) FROM keys WHERE {LIVE_KEY}").fetchone()[0])

    def count_edits_by_namespace(self) -> dict[str, int]:
        """namespace → live edits (for the edits-per-namespace metric; the namespace index makes it one scan)."""
        if self._live is not None:
            return self._live.counts()
        with self._db.reading() as db:
            rows = db.execute(f"SELECT namespace, COUNT(*) FROM edits WHERE {LIVE} GROUP BY namespace")
            return {str(ns): int(n) for ns, n in rows}

    def generation(self) -> int:
        """A counter bumped by every write; the index file records the one it reflects. Of a shared store: the
        newest this process has followed, with every earlier write (its own and others') applied."""
        if self.shared:
            with self._follow_lock:
                return self._followed
        return self._stored_generation()

    def get_meta(self, name: str) -> str | None:
        with self._db.reading() as db:
            row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    # --- following a shared store -------------------------------------------------------

    def follow(self) -> Followed:
        """The writes since the last call (of other processes, and this one's not yet counted), up to FOLLOW_BATCH
        of them, with this process's copy of the live edits brought in line. Idempotent over writes whose changes
        are applied already: the index changes remove every key a write touched, then add the live ones."""
        with self._follow_lock:
            after = self._followed
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT generation, namespace, edit_ids, key_ids FROM changes WHERE generation > ? "
                "ORDER BY generation LIMIT ?", (after, FOLLOW_BATCH),
            ).fetchall()
            if not rows:
                return Followed(after, {}, [], True)
            edit_ids = list(dict.fromkeys(i for row in rows for i in json.loads(row[2])))
            index: dict[str, IndexChanges] = {}
            for _, namespace, _, key_ids in rows:
                index.setdefault(str(namespace), IndexChanges()).remove_ids.extend(json.loads(key_ids))
            touched = sorted({k for changes in index.values() for k in changes.remove_ids})
            for chunk in _chunks(touched):
                for key_id, namespace, blob in db.execute(
                    f"SELECT key_id, namespace, vector FROM keys WHERE key_id IN ({','.join('?' * len(chunk))}) "
                    f"AND {LIVE_KEY}", chunk,
                ):
                    index[str(namespace)].add_keys([(int(key_id), np.frombuffer(blob, dtype=np.float32))])
            current = self._current(db, edit_ids)
        self._seen(_Written(int(rows[-1][0]), edit_ids, current), followed=True)
        live = [s.edit for s in current if s.edit.live and s.key_ids]
        return Followed(int(rows[-1][0]), index, live, len(rows) < FOLLOW_BATCH)

    def listen(self) -> Listener:
        """Wakes a follower when another process writes (a shared store only)."""
        listen = getattr(self._db, "listen", None)
        if listen is None:
            raise TypeError(f"{self.location} is not shared: nothing to follow")
        listener: Listener = listen()
        return listener

    # --- helpers ------------------------------------------------------------------------

    def _stored_generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def _load_live(self) -> LiveEdits:
        live = LiveEdits()
        with self._db.reading() as db:
            keys: dict[int, list[int]] = {}
            for key_id, seq in db.execute(f"SELECT key_id, edit_seq FROM keys WHERE {LIVE_KEY} ORDER BY key_id"):
                keys.setdefault(int(seq), []).append(int(key_id))
            stored = [StoredEdit(int(row[0]), _edit_from_row(row[1:]), tuple(keys.get(int(row[0]), ())))
                      for row in db.execute(f"SELECT seq, {EDIT_COLUMNS} FROM edits WHERE {LIVE}")]
        live.update((), stored)
        log.info("%d live edits of %s held in memory", len(stored), self.location)
        return live

    def _written(self, db: Connection, namespace: str, edit_ids: list[str], changes: IndexChanges) -> _Written:
        """Ends a write of edits (inside its transaction): the generation, and in a shared store the change log's
        row, the notification, and the touched edits as they now are."""
        generation = self._bump_generation(db)
        if not self.shared:
            return _Written(generation, [], [])
        db.execute(
            "INSERT INTO changes (generation, namespace, edit_ids, key_ids) VALUES (?, ?, ?, ?)",
            (generation, namespace, json.dumps(edit_ids), json.dumps([*changes.add_ids, *changes.remove_ids])),
        )
        self._db.notify(db, str(generation))
        return _Written(generation, edit_ids, self._current(db, edit_ids))

    def _seen(self, written: _Written, followed: bool = False) -> None:
        """After a commit (or a follow): the copy of the live edits takes the write in. A write of this process
        right after the followed generation moves the followed generation on (its caller applies its index
        changes); one after a gap is left for `follow`, which applies the gap's writes first."""
        if not self.shared:
            return
        with self._follow_lock:
            assert self._live is not None
            self._live.update(written.edit_ids, written.current)
            if followed or written.generation == self._followed + 1:
                self._followed = max(self._followed, written.generation)

    def _current(self, db: Connection, edit_ids: Sequence[str]) -> list[StoredEdit]:
        """The stored ones of these edits, live or not, with their key ids."""
        found: list[StoredEdit] = []
        for chunk in _chunks(edit_ids):
            rows = db.execute(
                f"SELECT seq, {EDIT_COLUMNS} FROM edits WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            keys: dict[int, list[int]] = {}
            seqs = [int(r[0]) for r in rows]
            if seqs:
                for key_id, seq in db.execute(
                    f"SELECT key_id, edit_seq FROM keys WHERE edit_seq IN ({','.join('?' * len(seqs))}) "
                    "ORDER BY key_id", seqs,
                ):
                    keys.setdefault(int(seq), []).append(int(key_id))
            found.extend(StoredEdit(int(r[0]), _edit_from_row(r[1:]), tuple(keys.get(int(r[0]), ()))) for r in rows)
        return found

    def _check_room(self, db: Connection, namespace: str, new_live: int, max_edits: int) -> None:
        (count,) = db.execute(
            f"SELECT COUNT(*) FROM edits WHERE namespace = ? AND {LIVE}", (namespace,)
        ).fetchone()
        if count + new_live > max_edits:
            raise ResourceExhausted(
                f"namespace {namespace!r} has {count} edits; adding {new_live} would pass its limit "
                f"of {max_edits} (max_edits_per_namespace); delete some first"
            )

    def _find(self, db: Connection, namespace: str, edit_id: str) -> tuple[int, Edit] | None:
        row = db.execute(
            f"SELECT seq, {EDIT_COLUMNS} FROM edits WHERE id = ? AND namespace = ?", (edit_id, namespace)
        ).fetchone()
        return None if row is None else (int(row[0]), _edit_from_row(row[1:]))

    def _get_row(self, db: Connection, namespace: str, edit_id: str) -> tuple[int, Edit]:
        found = self._find(db, namespace, edit_id)
        if found is None:
            raise EditNotFound(f"no edit with id {edit_id!r} in namespace {namespace!r}")
        return found

    def _key_ids(self, db: Connection, seq: int) -> list[int]:
        return [int(k) for (k,) in db.execute("SELECT key_id FROM keys WHERE edit_seq = ?", (seq,))]

    def _keys_with_vectors(self, db: Connection, seq: int) -> list[tuple[int, np.ndarray]]:
        rows = db.execute("SELECT key_id, vector FROM keys WHERE edit_seq = ? ORDER BY key_id", (seq,))
        return [(int(k), np.frombuffer(blob, dtype=np.float32)) for k, blob in rows]

    def _insert_keys(self, db: Connection, seq: int, edit: Edit, vectors: np.ndarray) -> list[int]:
        key_ids = []
        for text, vector in zip(edit.key_texts(), vectors, strict=True):
            ((key_id,),) = db.execute(
                "INSERT INTO keys (edit_seq, namespace, text, vector) VALUES (?, ?, ?, ?) RETURNING key_id",
                (seq, edit.namespace, text, np.asarray(vector, dtype=np.float32).tobytes()),
            ).fetchall()
            key_ids.append(int(key_id))
        return key_ids

    def _log(
        self, db: Connection, at: float, token_name: str, action: EditAction, before: Edit | None, after: Edit | None
    ) -> None:
        """An audit event, inside the caller's transaction: it commits with the change or not at all."""
        edit = after or before
        assert edit is not None
        db.execute(
            "INSERT INTO edit_events (at, namespace, token_name, action, edit_id, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at, edit.namespace, token_name, action.value, edit.id, edit_to_json(before) if before else "",
             edit_to_json(after) if after else ""),
        )

    def _insert_row(self, db: Connection, edit: Edit) -> int:
        """Inserts the edit's row; returns its seq."""
        ((seq,),) = db.execute(
            f"INSERT INTO edits ({EDIT_COLUMNS}, subject_key, object_key) "
            f"VALUES ({', '.join('?' * (len(EDIT_FIELDS) + 2))}) RETURNING seq",
            (*_edit_to_row(edit), subject_key(edit.subject), edit.object_key),
        ).fetchall()
        return int(seq)

    @staticmethod
    def _bump_generation(db: Connection) -> int:
        ((generation,),) = db.execute(
            "INSERT INTO meta (name, value) VALUES ('generation', '1') "
            "ON CONFLICT (name) DO UPDATE SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT) RETURNING value"
        ).fetchall()
        return int(generation)


def edit_to_json(edit: Edit) -> str:
    """The edit as a JSON object with Edit's field names (the audit log's and the version history's form)."""
    fields = asdict(edit)
    fields["kind"] = edit.kind.value
    return json.dumps(fields, ensure_ascii=False, sort_keys=True)


def edit_from_json(text: str) -> Edit:
    fields = json.loads(text)
    fields["kind"] = EditKind(fields["kind"])
    fields["paraphrases"] = tuple(fields["paraphrases"])
    fields["aliases"] = tuple(fields.get("aliases", ()))  # versions and events written before aliases have none
    return Edit(**fields)


def _chunks(ids: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(ids), IN_CHUNK):
        yield list(ids[start : start + IN_CHUNK])


def _edit_to_row(edit: Edit) -> tuple[object, ...]:
    return (
        edit.id, edit.namespace, edit.subject, edit.prompt, edit.target_new, edit.target_true,
        json.dumps(list(edit.paraphrases)), edit.created_at_unix_s, edit.kind.value, edit.pattern, edit.replacement,
        edit.version, edit.supersedes, edit.superseded_by, edit.updated_at_unix_s, json.dumps(list(edit.aliases)),
    )


def _edit_from_row(row: Sequence[object]) -> Edit:
    (id_, namespace, subject, prompt, target_new, target_true, paraphrases, created_at, kind, pattern, replacement,
     version, supersedes, superseded_by, updated_at, aliases) = row
    return Edit(
        id=str(id_), namespace=str(namespace), subject=str(subject), prompt=str(prompt),
        target_new=str(target_new), target_true=None if target_true is None else str(target_true),
        paraphrases=tuple(json.loads(str(paraphrases))), created_at_unix_s=float(created_at),  # type: ignore[arg-type]
        kind=EditKind(kind), pattern=str(pattern), replacement=str(replacement), version=int(version),  # type: ignore[call-overload]
        supersedes=str(supersedes), superseded_by=str(superseded_by), updated_at_unix_s=float(updated_at),  # type: ignore[arg-type]
        aliases=tuple(json.loads(str(aliases))),
    )
