"""The PostgreSQL backend of the durable stores, shared by several editcache processes (replicas).

The promise is SQLite's: a write is committed, in PostgreSQL's WAL, before it returns (synchronous_commit as the
server sets it; on by default). Each write takes its store's advisory lock for the transaction, as SQLite's
BEGIN IMMEDIATE takes the file's: a write's reads see every earlier write, and writes commit in the order of their
generations, so a replica that follows a store by generation misses none.

When PostgreSQL cannot be reached, each call fails at once with StorageFailed (UNAVAILABLE) and the next call connects
again: a restarted PostgreSQL is used without restarting editcache.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from server.errors import StorageFailed
from server.store import Connection, Schema, masked, split_statements

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3  # a stopped server refuses at once; this bounds an unreachable host


class PostgresDatabase:
    """`server.store.Database` over one PostgreSQL schema: one connection behind a lock, reconnected when lost."""

    shared = True
    unindexed = ""  # PostgreSQL's planner needs no such hint

    def indexed_by(self, index: str) -> str:
        return ""  # nor this one

    def __init__(self, url: str, schema: Schema) -> None:
        self.location = masked(url)
        self.channel = f"editcache_{schema.name}"  # LISTEN/NOTIFY channel of this store's writes
        self._url = url
        self._schema = schema
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None
        self._write_lock = zlib.crc32(schema.name.encode())  # the advisory lock's key
        self._migrate()

    @contextmanager
    def reading(self) -> Iterator[_Connection]:
        with self._lock, self._errors():
            yield _Connection(self._connect())

    @contextmanager
    def writing(self) -> Iterator[_Connection]:
        with self._lock, self._errors():
            connection = self._connect()
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_lock,))
                yield _Connection(connection)

    def notify(self, db: Connection, payload: str) -> None:
        db.execute("SELECT pg_notify(?, ?)", (self.channel, payload))

    def listen(self) -> Listener:
        return Listener(self._url, self.channel)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            self._connection = connect(self._url, self._schema.name)
        return self._connection

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if self._connection is not None:
                self._connection.close()  # the next call connects again
            raise StorageFailed(
                f"{self._schema.title} at {self.location} cannot be reached ({first_line(exc)}): writes fail until "
                "it is back; this server reconnects by itself"
            ) from exc
        except psycopg.Error as exc:
            raise StorageFailed(f"{self._schema.title} at {self.location} failed: {first_line(exc)}") from exc

    def _migrate(self) -> None:
        """Brings the schema to its newest version in one transaction, under the write lock (replicas that start
        together migrate once); refuses a schema from a newer release."""
        schema = self._schema
        newest = len(schema.postgres)
        with self.writing() as db:
            db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema.name}")
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else int(row[0])
            if version > newest:
                raise StorageFailed(
                    f"{schema.title} at {self.location} is at schema version {version}, newer than this server's "
                    f"{newest}: run the release that wrote it"
                )
            for number, script in enumerate(schema.postgres[version:], start=version + 1):
                for statement in split_statements(script):
                    db.execute(statement)
                log.info("%s at %s migrated to schema version %d", schema.title, self.location, number)
            if version < newest:
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (newest,))


class _Connection:
    """psycopg's connection speaking the stores' `?` parameters."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._connection.execute(_placeholders(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._connection.cursor() as cursor:
            cursor.executemany(_placeholders(sql), rows)


class Listener:
    """Wakes a follower when a write to the store commits (LISTEN); reconnects by itself after a lost connection."""

    def __init__(self, url: str, channel: str) -> None:
        self._url = url
        self._channel = channel
        self._connection: psycopg.Connection[Any] | None = None

    def wait(self, timeout_s: float) -> None:
        """Returns on a notification, after `timeout_s`, or at once after (re)connecting: notifications sent while
        not listening are lost, so the caller catches up by generation after every return."""
        try:
            if self._connection is None or self._connection.closed:
                self._connection = connect(self._url, None)
                self._connection.execute(f"LISTEN {self._channel}")
                return
            for _ in self._connection.notifies(timeout=timeout_s, stop_after=1):
                pass
        except psycopg.Error as exc:
            log.debug("store listener: %s", first_line(exc))
            self.close()
            time.sleep(timeout_s)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def connect(url: str, schema: str | None) -> psycopg.Connection[Any]:
    options = {"options": f"-c search_path={schema}"} if schema else {}
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **options)  # type: ignore[arg-type]


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _placeholders(sql: str) -> str:
    """`?` → psycopg's `%s` (the stores' SQL has no `?` or `%` of its own)."""
    return sql.replace("%", "%%").replace("?", "%s")
