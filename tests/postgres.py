"""A throwaway PostgreSQL server from Debian's `postgresql` package, for tests and measurements, and its fixtures
(test modules name this module in `pytest_plugins`).

It runs from a temporary data directory on a free loopback port, as the `postgres` user when we are root (initdb
refuses root), with trust authentication: nothing outside this machine can reach it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.memory.store import EditStore

USER = "editcache"


def postgres_bin() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/VERSION/bin), None if none is."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class LocalPostgres:
    def __init__(self) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
        self._bin = bin_dir
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="editcache-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        if self._as_owner:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        # fsync off: these tests kill editcache servers, never the machine, and PostgreSQL's commit still returns
        # only once the transaction is in its WAL; it spares the shared cores' disk.
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def destroy(self) -> None:
        """Stops the server if it runs and removes its files."""
        subprocess.run([*self._as_owner, str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([*self._as_owner, str(self._bin / program), *args], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr}\n{self.log_text()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One PostgreSQL server for the session; tests take their own databases (`postgres_url`)."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql; .ci/run does)")
    server = LocalPostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres_url(postgres: LocalPostgres) -> str:
    """A fresh database on the session's server."""
    return postgres.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_on_each_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EditStore]:
    """An empty EditStore in a SQLite file, then in a fresh PostgreSQL database; closed after the test."""
    location = tmp_path / "edits.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = EditStore(location)
    yield store
    store.close()
