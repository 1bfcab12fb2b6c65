"""Crash safety: SIGKILL during concurrent AddEdits loses no acknowledged edit and leaves no partial record."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import faiss

from client import EditcacheError, EditRecord, GenerationOptions
from client.launch import LocalServer
from tests.crash import kill

NAMESPACE = "crash"
WRITERS = 4
ACKED_BEFORE_KILL = 24


def write_until_killed(server: LocalServer, writer: int, acked: list[EditRecord], lock: threading.Lock) -> None:
    with server.client(NAMESPACE) as client:
        for i in range(10_000):
            subject = f"w{writer}n{i}"
            try:
                record = client.add_edit(subject, f"{subject} lives in the city of", f"t{writer}n{i}",
                                         paraphrases=[f"where does {subject} live"])
            except EditcacheError:
                return  # the server is gone; this edit was never acknowledged
            with lock:
                acked.append(record)


def store_rows(data_dir: Path) -> tuple[list[tuple[object, ...]], dict[int, tuple[int, str]]]:
    """Every edit row, and each key's (edit seq, namespace), read-only."""
    with sqlite3.connect(f"file:{data_dir / 'edits.sqlite'}?mode=ro", uri=True) as db:
        edits = db.execute("SELECT seq, id, namespace, subject, prompt, target_new, paraphrases, created_at "
                           "FROM edits").fetchall()
        keys = {k: (seq, ns) for k, seq, ns in db.execute("SELECT key_id, edit_seq, namespace FROM keys")}
    return edits, keys


def assert_store_is_whole(data_dir: Path) -> dict[int, tuple[int, str]]:
    edits, keys = store_rows(data_dir)
    keys_per_edit: dict[int, int] = {}
    for seq, _ns in keys.values():
        keys_per_edit[seq] = keys_per_edit.get(seq, 0) + 1
    for seq, *fields in edits:
        assert all(f is not None and f != "" for f in fields), f"partial edit row {fields}"
        assert keys_per_edit.get(seq) == 1 + len(json.loads(fields[5])), f"edit {fields[0]} lacks key vectors"
    assert set(keys_per_edit) <= {row[0] for row in edits}  # no orphan keys
    return keys


def index_vectors_in_log(text: str) -> int:
    (count,) = re.findall(r"edit index (?:rebuilt: |loaded from \S+ \()(\d+) vectors", text)[-1:]
    return int(count)


def assert_saved_index_matches_store(data_dir: Path, keys: dict[int, tuple[int, str]]) -> None:
    manifest = json.loads((data_dir / "index" / "manifest.json").read_text())
    for namespace, name in manifest["namespaces"].items():
        index = faiss.read_index(str(data_dir / "index" / name))
        ids = set(faiss.vector_to_array(index.id_map).tolist())
        assert ids == {k for k, (_, ns) in keys.items() if ns == namespace}


def assert_edits_fire(server: LocalServer, edits: list[EditRecord]) -> None:
    with server.client(NAMESPACE) as client:
        in_scope = client.server_info().in_scope_route
        for edit in edits:
            answer = client.generate(edit.prompt, options=GenerationOptions(max_new_tokens=1))
            assert (answer.route, answer.edit_id) == (in_scope, edit.id), f"edit {edit.id} does not fire"


def test_sigkill_during_concurrent_adds_then_index_rebuilds(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = LocalServer(tiny_model_dir, tmp_path, "--gate", "similarity")
    server.start()
    acked: list[EditRecord] = []
    lock = threading.Lock()
    writers = [threading.Thread(target=write_until_killed, args=(server, w, acked, lock)) for w in range(WRITERS)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + 120
    while len(acked) < ACKED_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.01)
    kill(server)  # mid-stream: writers have requests in flight
    for thread in writers:
        thread.join()
    assert len(acked) >= ACKED_BEFORE_KILL

    since = len(server.log_text())
    server.start()
    try:
        restart_log = server.log_text()[since:]
        keys = assert_store_is_whole(tmp_path)
        assert index_vectors_in_log(restart_log) == len(keys)  # the rebuilt index holds every stored key
        with server.client(NAMESPACE) as client:
            stored = {e.id: e for e in client.iter_edits()}
        for edit in acked:  # every acknowledged edit is there, field for field
            assert stored[edit.id] == edit
        assert_edits_fire(server, acked)
    finally:
        assert server.stop() == 0
    assert_saved_index_matches_store(tmp_path, keys)

    for damage, expected in (("corrupt", "unreadable"), ("missing", "No such file")):
        for path in (tmp_path / "index").glob("*.faiss"):
            if damage == "corrupt":
                path.write_bytes(b"not a faiss index")
            else:
                path.unlink()
        since = len(server.log_text())
        server.start()
        try:
            restart_log = server.log_text()[since:]
            assert expected in restart_log and "edit index rebuilt" in restart_log, restart_log[-2000:]
            assert index_vectors_in_log(restart_log) == len(keys)
            assert_edits_fire(server, acked[:: max(1, len(acked) // 8)])
        finally:
            assert server.stop() == 0
        assert_saved_index_matches_store(tmp_path, keys)
