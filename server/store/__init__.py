"""The databases the durable stores (the edit store, the parametric ledger) live in: one interface, two backends.

SQLite (store/sqlite.py), embedded, is the default: one server per data directory. PostgreSQL (store/postgres.py),
a server, is shared by several editcache processes, each of which follows the others' writes.

A store writes its queries once, in the SQL both dialects agree on, with `?` for parameters. What differs lives in
one place per backend: column types and versioned migrations in each store's `Schema`, the rest in the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Rows(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """One transaction's (or one read's) view of the database; parameters are `?`."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...


@dataclass(frozen=True)
class Schema:
    """A store's tables in each dialect, versioned.

    SQLite: `sqlite` (CREATE ... IF NOT EXISTS) is version 1, each of `sqlite_migrations` one version more, recorded
    in PRAGMA user_version. PostgreSQL: entry i of `postgres` makes version i + 1, recorded in the table
    schema_version, in the PostgreSQL schema `name` (each store its own, so their table names may repeat).
    A change of tables needs an entry in both lists.
    """

    name: str  # a PostgreSQL schema name
    title: str  # for messages: "the edit store"
    sqlite: str
    postgres: tuple[str, ...]
    sqlite_migrations: tuple[str, ...] = ()
    # SQL functions the SQLite migrations call (PostgreSQL migrations start from the current tables).
    sqlite_functions: Mapping[str, Callable[[str], str]] = field(default_factory=dict)


class Database(Protocol):
    location: str  # for messages and logs: the file, or the URL without its password
    # True when other processes may write it too: their writes must be followed (store/postgres.py).
    shared: bool
    # Written before a column to keep the planner off that column's index ("+" in SQLite; "" where not needed).
    unindexed: str

    def indexed_by(self, index: str) -> str:
        """Written after a table name to make the planner read it through `index` ("" where not needed)."""
        ...

    def reading(self) -> AbstractContextManager[Connection]:
        """Queries outside a write; errors come out as the domain's storage errors."""
        ...

    def writing(self) -> AbstractContextManager[Connection]:
        """One transaction, committed (durably) on leaving, rolled back on any exception. One writer at a time,
        across processes too, so a write's reads see every earlier write and commits come in generation order."""
        ...

    def notify(self, db: Connection, payload: str) -> None:
        """Inside a write: wakes the processes that follow this database once the write commits."""
        ...

    def close(self) -> None: ...


def split_statements(script: str) -> list[str]:
    """A schema script's statements, to run one by one inside one transaction (no `;` in its comments)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def is_postgres(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def open_database(location: Path | str, schema: Schema) -> Database:
    """A file path: SQLite there. A postgresql:// URL: that database (psycopg's URL form)."""
    if is_postgres(location):
        from server.store.postgres import PostgresDatabase  # psycopg only where a server uses it

        return PostgresDatabase(str(location), schema)
    from server.store.sqlite import SqliteDatabase

    return SqliteDatabase(Path(location), schema)


def masked(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
