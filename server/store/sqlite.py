"""The SQLite backend of the durable stores: WAL, each commit on disk before it returns, all-or-nothing writes,
checked when opened, private to the server's user, and its failures turned into the domain's storage errors."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.errors import DiskFull, EditcacheError, StorageFailed
from server.files import make_private, private_dir
from server.store import Connection, Schema, split_statements

log = logging.getLogger(__name__)

# Under this much free space, an I/O error on write is taken for a full disk (SQLite reports most as SQLITE_FULL).
NEARLY_FULL_BYTES = 1 << 20
DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def open_durable(path: Path, schema: str) -> sqlite3.Connection:
    """A connection usable from any thread (callers hold their own lock), with `schema` applied.

    Refuses (StorageFailed, naming the file) a store that fails SQLite's quick_check or cannot be opened for
    writing, before writing anything to it; DiskFull when the schema cannot be written for want of space.
    """
    try:
        private_dir(path.parent)
        for existing in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if existing == path or existing.exists():
                make_private(existing)  # SQLite gives its -wal and -shm files the main file's mode
    except OSError as exc:
        raise StorageFailed(f"cannot create {path} ({exc.strerror}); the server's user must be able to write "
                            f"{path.parent}") from exc
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        problems = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StorageFailed(f"{path} is damaged (quick_check: {'; '.join(problems[:3])}); restore it from a "
                                "backup, or move it aside to start with an empty store (README: Operations)")
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns, so an acknowledged write survives power loss too.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(schema)
    except sqlite3.Error as exc:
        db.close()
        raise storage_error(exc, path) from exc
    except StorageFailed:
        db.close()
        raise
    return db


def storage_error(exc: sqlite3.Error, path: Path) -> EditcacheError:
    """The domain error for an SQLite failure on the store at `path`."""
    primary = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if primary == sqlite3.SQLITE_FULL or (primary == sqlite3.SQLITE_IOERR and _nearly_full(path)):
        return DiskFull(f"the disk holding {path} is full; nothing was written: free space there and retry")
    if primary in DAMAGED:
        return StorageFailed(f"{path} is damaged ({exc}); stop the server and restore it from a backup "
                             "(README: Operations)")
    return StorageFailed(f"{path} failed ({exc}); check the file and its directory (README: Operations)")


def _nearly_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path.parent).free < NEARLY_FULL_BYTES
    except OSError:
        return False


class StorageGuard:
    """Turns a store's SQLite errors into domain errors. After any failure but a full disk (which SQLite rolls back
    cleanly) it refuses writes until the server restarts: a store that failed may be damaged, and writing more into
    it spreads the damage; the restart's quick_check decides."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._failure: str | None = None

    @contextmanager
    def reading(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise StorageFailed(f"writes to {self._path} are stopped until the server restarts, after: {failure}")
        with self.reading():
            yield

    def _failed(self, exc: sqlite3.Error) -> EditcacheError:
        error = storage_error(exc, self._path)
        if not isinstance(error, DiskFull):
            with self._lock:
                self._failure = self._failure or str(error)
        log.error("%s", error)
        return error


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception: nothing partial is ever stored."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")  # inside: a COMMIT that fails (a full disk) is rolled back too
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL does)
            db.execute("ROLLBACK")
        raise


class SqliteDatabase:
    """`server.store.Database` over one SQLite file: one connection behind a lock."""

    shared = False
    unindexed = "+"  # a unary plus: the column, not its index

    def indexed_by(self, index: str) -> str:
        # Without statistics SQLite breaks a tie between two-column indexes by their order, so it may walk a
        # namespace's live edits (edits_live) rather than look a key up (20 ms against 0.02 at 100,000 edits).
        return f"INDEXED BY {index}"

    def __init__(self, path: Path, schema: Schema) -> None:
        self.location = str(path)
        self._lock = threading.Lock()
        self._db = open_durable(path, schema.sqlite)
        for name, function in schema.sqlite_functions.items():
            self._db.create_function(name, 1, function, deterministic=True)
        self._guard = StorageGuard(path)
        if schema.sqlite_migrations:
            self._migrate(schema)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard.reading():
            yield self._db

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._guard.writing(), transaction(self._db):
            yield self._db

    def notify(self, db: Connection, payload: str) -> None:
        pass  # nobody else writes the file

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """One statement outside the lock and the guard: diagnostics only (query plans, PRAGMAs in tests)."""
        return self._db.execute(sql, params)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self, schema: Schema) -> None:
        """Brings the tables to the newest version, one migration per transaction; refuses a file from a newer
        release."""
        newest = 1 + len(schema.sqlite_migrations)
        with self._lock, self._guard.writing():
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            version = max(int(version), 1)  # 0: version 1 as the base schema created it, before versions were recorded
            if version > newest:
                raise StorageFailed(
                    f"{schema.title} is at schema version {version}, newer than this server's {newest}: "
                    "run the release that wrote it"
                )
            for number, migration in enumerate(schema.sqlite_migrations[version - 1:], start=version + 1):
                with transaction(self._db):
                    for statement in split_statements(migration):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number}")
                log.info("%s migrated to schema version %d", schema.title, number)
