"""Servers over one PostgreSQL edit store (issue 30): an edit added through one answers on the other, a SIGKILL loses
no acknowledged edit, and a stopped PostgreSQL makes writes UNAVAILABLE while queries go on, until it is back."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import EditcacheClient, EditcacheError, EditRecord, GenerationOptions, NotFound, Unavailable
from client.launch import LocalServer
from tests.crash import kill
from tests.postgres import LocalPostgres

pytest_plugins = ("tests.postgres",)

PROMPT = "the capital of france is"
ONE_TOKEN = GenerationOptions(max_new_tokens=1)
FOLLOW_DEADLINE_S = 30.0  # a bound on "eventually" for busy shared cores, not a measurement (scripts/measure_follow.py)


def fresh_namespace() -> str:
    return "pg-" + uuid.uuid4().hex[:10]


def answering_edit(client: EditcacheClient, prompt: str) -> str | None:
    """The edit the gate routes `prompt` to (None: the base model answers)."""
    return client.generate(prompt, options=ONE_TOKEN).edit_id


def wait_for_edit(client: EditcacheClient, prompt: str, wanted: str | None) -> None:
    deadline = time.monotonic() + FOLLOW_DEADLINE_S
    while (found := answering_edit(client, prompt)) != wanted:
        assert time.monotonic() < deadline, f"still {found!r}, not {wanted!r}, after {FOLLOW_DEADLINE_S} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def replicas(
    postgres: LocalPostgres, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalServer, LocalServer]]:
    """Two servers, each with its own data directory (its index files), over one PostgreSQL database."""
    url = postgres.new_database()
    servers = [LocalServer(tiny_model_dir, tmp_path_factory.mktemp(f"replica-{name}"), "--store", url)
               for name in "ab"]
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def test_an_edit_added_on_one_server_answers_on_the_other(replicas: tuple[LocalServer, LocalServer]) -> None:
    a, b = replicas
    namespace = fresh_namespace()
    with a.client(namespace) as client_a, b.client(namespace) as client_b:
        assert answering_edit(client_b, PROMPT) is None
        edit = client_a.add_edit("france", PROMPT, "rome")
        assert answering_edit(client_a, PROMPT) == edit.id  # the writer reads its own write at once
        assert client_b.get_edit(edit.id).target_new == "rome"
        wait_for_edit(client_b, PROMPT, edit.id)

        updated = client_b.add_edit("france", PROMPT, "madrid")  # the same fact again: supersedes, on the other side
        wait_for_edit(client_a, PROMPT, updated.id)
        client_a.delete_edit(updated.id)  # restores the first
        wait_for_edit(client_b, PROMPT, edit.id)
        client_b.delete_edit(edit.id)
        wait_for_edit(client_a, PROMPT, None)
        assert client_a.list_edits().total == 0


def test_a_killed_server_loses_no_acknowledged_edit(
    replicas: tuple[LocalServer, LocalServer], tiny_model_dir: Path, tmp_path: Path
) -> None:
    a, b = replicas
    namespace = fresh_namespace()
    acked: list[EditRecord] = []
    lock = threading.Lock()

    def write_until_killed(writer: int) -> None:
        with a.client(namespace) as client:
            for i in range(10_000):
                subject = f"w{writer}n{i}"
                try:
                    record = client.add_edit(subject, f"{subject} lives in the city of", f"t{writer}n{i}")
                except EditcacheError:
                    return  # the server is gone: this edit was never acknowledged
                with lock:
                    acked.append(record)

    writers = [threading.Thread(target=write_until_killed, args=(w,)) for w in range(4)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + 120
    while len(acked) < 24 and time.monotonic() < deadline:
        time.sleep(0.02)
    kill(a)
    for thread in writers:
        thread.join(timeout=60)
    assert len(acked) >= 24

    with b.client(namespace) as client_b:
        stored = {e.id for e in client_b.iter_edits()}
        assert {e.id for e in acked} <= stored
        last = acked[-1]
        wait_for_edit(client_b, f"{last.subject} lives in the city of", last.id)  # followed, not only stored
    a.start()  # the same data directory: its index files, then the store's writes since
    with a.client(namespace) as client_a:
        assert {e.id for e in client_a.iter_edits()} == stored
        first = acked[0]
        assert answering_edit(client_a, f"{first.subject} lives in the city of") == first.id


def test_a_stopped_postgresql_fails_writes_and_serves_reads_until_it_is_back(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    postgres = LocalPostgres()  # its own: this test stops it
    try:
        postgres.start()
        server = LocalServer(tiny_model_dir, tmp_path / "server", "--store", postgres.new_database())
        server.start()
        try:
            with server.client(fresh_namespace()) as client:
                edit = client.add_edit("france", PROMPT, "rome")
                postgres.stop()
                with pytest.raises(Unavailable, match="edit store at postgresql://.* cannot be reached"):
                    client.add_edit("germany", "the capital of germany is", "madrid")
                assert answering_edit(client, PROMPT) == edit.id  # from this server's index and copy
                postgres.start()
                later = client.add_edit("germany", "the capital of germany is", "madrid")  # reconnected
                assert answering_edit(client, "the capital of germany is") == later.id
                with pytest.raises(NotFound):
                    client.get_edit("0" * 32)
                assert client.get_edit(edit.id).target_new == "rome"
        finally:
            server.stop()
    finally:
        postgres.destroy()
