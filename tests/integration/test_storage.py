"""What the server does with its data directory when things go wrong: a damaged or emptied store, a damaged or
lying index, a full disk (issue 23, items 3, 4, 7), and who may read the files (item 11)."""

from __future__ import annotations

import contextlib
import errno
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import EditInput, GenerationOptions, ResourceExhausted
from client.launch import LocalServer

SPACE_NEEDLE = ("Space Needle", "The Space Needle is located in the city of", "Taipei")
EIFFEL = ("Eiffel Tower", "The Eiffel Tower is located in the city of", "Rome")


def serve(tiny_model_dir: Path, data_dir: Path) -> LocalServer:
    server = LocalServer(tiny_model_dir, data_dir, "--gate", "similarity")
    server.start()
    return server


def refusal(server: LocalServer) -> str:
    """The start fails: its exit code and the one line it printed, without a traceback."""
    since = len(server.log_text()) if server.log_path.exists() else 0
    with pytest.raises(RuntimeError, match="server exited with 3"):
        server.start()
    this_run = server.log_text()[since:]
    assert "Traceback" not in this_run, this_run[-3000:]
    (line,) = [ln for ln in this_run.splitlines() if ln.startswith("editcache-server: cannot start:")]
    return line


def test_a_damaged_or_emptied_store_stops_the_start_with_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = serve(tiny_model_dir, tmp_path)
    with server.client("a") as client:
        client.add_edits([EditInput(f"Needle {n}", f"Needle {n} is located in the city of", "Taipei",  # 30 facts
                                    paraphrases=[f"where is it {i}" * 20 for i in range(8)]) for n in range(30)])
    assert server.stop() == 0
    store = tmp_path / "edits.sqlite"
    original = store.read_bytes()

    data = bytearray(original)  # one page of the edits table overwritten, the size unchanged
    page = int.from_bytes(data[16:18], "big")
    data[page + 8 : 2 * page - 8] = b"\xa5" * (page - 16)
    store.write_bytes(bytes(data))
    line = refusal(server)
    assert f"{store} is damaged" in line and "restore it from a backup" in line
    assert store.read_bytes() == bytes(data)  # not written to

    store.write_bytes(b"")  # what an emptied file or a failed copy leaves
    line = refusal(server)
    assert f"{store} is empty" in line and "records" in line and "restore it from a backup" in line
    assert store.stat().st_size == 0

    store.write_bytes(original)
    server.start()
    try:
        with server.client("a") as client:
            assert len(client.list_edits().edits) == 30
    finally:
        assert server.stop() == 0


def test_a_damaged_or_swapped_index_is_rebuilt_and_answers_only_its_namespace(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = serve(tiny_model_dir, tmp_path)
    try:
        with server.client("a") as a, server.client("b") as b:
            [needle] = a.add_edits([EditInput(*SPACE_NEEDLE)])
            [eiffel] = b.add_edits([EditInput(*EIFFEL, paraphrases=["Where is the Eiffel Tower?"])])
            in_scope = a.server_info().in_scope_route
    finally:
        assert server.stop() == 0
    index_dir = tmp_path / "index"
    manifest = json.loads((index_dir / "manifest.json").read_text())
    files = manifest["namespaces"]
    files["a"], files["b"] = files["b"], files["a"]  # each file still matches its checksum
    (index_dir / "manifest.json").write_text(json.dumps(manifest))

    server.start()
    try:
        with server.client("a") as a, server.client("b") as b:
            for client, edit in ((a, needle), (b, eiffel)):
                answer = client.generate(edit.prompt, options=GenerationOptions(max_new_tokens=1))
                assert (answer.route, answer.edit_id) == (in_scope, edit.id)
            answer = a.generate(EIFFEL[1], options=GenerationOptions(max_new_tokens=1))
            assert answer.edit_id != eiffel.id  # b's edit never answers in a
    finally:
        assert server.stop() == 0

    path = index_dir / json.loads((index_dir / "manifest.json").read_text())["namespaces"]["b"]
    damaged = bytearray(path.read_bytes())
    damaged[-64:] = b"\x3f" * 64  # the last vector's bytes: still a loadable index, but not this one
    path.write_bytes(bytes(damaged))
    since = len(server.log_text())
    server.start()
    try:
        assert "does not match its checksum" in server.log_text()[since:]
        assert "edit index rebuilt" in server.log_text()[since:]
        with server.client("b") as b:
            answer = b.generate(EIFFEL[1], options=GenerationOptions(max_new_tokens=1))
            assert answer.edit_id == eiffel.id
    finally:
        assert server.stop() == 0


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (1 << 20, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * chunk)
    with pytest.raises(OSError) as full:
        (disk / "probe").write_bytes(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


def test_a_full_disk_refuses_writes_as_resource_exhausted_and_stops_cleanly(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", "64m") as disk:
        data_dir = disk / "data"
        server = serve(tiny_model_dir, data_dir)
        try:
            with server.client("full") as client:
                acked = client.add_edits([EditInput(*SPACE_NEEDLE)])
                filler = fill(disk)
                batch = [EditInput(f"S{i}", f"S{i} lives in the city of", f"T{i}",
                                   paraphrases=[f"where does S{i} live, {j}?" * 8 for j in range(8)])
                         for i in range(200)]
                with pytest.raises(ResourceExhausted, match="disk holding .* is full"):
                    client.add_edits(batch)
                assert [e.id for e in client.list_edits().edits] == [acked[0].id]  # reads go on
        finally:
            assert server.stop() == 0  # the index cannot be saved; the shutdown does not depend on it
        assert not list((data_dir / "index").glob("*.tmp"))

        server.start()  # still full: the server starts and serves reads
        try:
            with server.client("full") as client:
                assert [e.id for e in client.list_edits().edits] == [acked[0].id]
        finally:
            assert server.stop() == 0

        filler.unlink()
        server.start()
        try:
            with server.client("full") as client:
                client.add_edits([EditInput(*EIFFEL)])
                assert len(client.list_edits().edits) == 2
        finally:
            assert server.stop() == 0


def test_data_files_are_private_to_the_servers_user(tiny_model_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = serve(tiny_model_dir, data_dir)
    try:
        with server.client("p") as client:
            client.add_edits([EditInput(*SPACE_NEEDLE)])
    finally:
        assert server.stop() == 0
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    data_files = [p for p in data_dir.rglob("*") if p.name != "server.log"]  # the log is the launcher's
    assert any(p.name == "edits.sqlite" for p in data_files) and any(p.suffix == ".faiss" for p in data_files)
    for path in data_files:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
