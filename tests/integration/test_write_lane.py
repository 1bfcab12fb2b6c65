"""One tenant's large AddEdits does not hold up other tenants' reads (issue 23, item 5): writes embed on their own
lane, bounded by the characters waiting to be embedded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from client import EditcacheClient, EditInput, ResourceExhausted
from client.launch import LocalServer

LIMIT_CHARS = 600_000


def large_batch(tag: str) -> list[EditInput]:
    """About 240k characters of prompts and paraphrases: seconds of embedding."""
    return [EditInput(f"{tag}{i}", f"{tag}{i} lives in the city of", f"T{i}",
                      paraphrases=[f"Where does {tag}{i} live? Variant {j}. " + "long words " * 45 for j in range(16)])
            for i in range(30)]


def wait_for_log(server: LocalServer, since: int, text: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in server.log_text()[since:]:
        assert time.monotonic() < deadline, f"no {text!r} in the server log"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalServer:
    data_dir = tmp_path_factory.mktemp("write-lane")
    config = data_dir / "limits.toml"
    config.write_text(f"[limits]\nmax_pending_edit_chars = {LIMIT_CHARS}\n")
    server = LocalServer(tiny_model_dir, data_dir, "--gate", "similarity", "--config", str(config))
    server.start()
    yield server
    server.stop()


def test_reads_in_another_namespace_complete_while_large_adds_embed(server: LocalServer) -> None:
    with server.client("small") as small:
        [mine] = small.add_edits([EditInput("Space Needle", "The Space Needle is located in the city of", "Taipei")])
    since = len(server.log_text())
    done: list[str] = []
    failed: list[BaseException] = []

    def add(tag: str) -> None:
        try:
            # No deadline: the second add waits behind the first on the lane, minutes on loaded cores.
            with EditcacheClient(server.addr, namespace="big", timeout_s=None) as big:
                big.add_edits(large_batch(tag))
            done.append(tag)
        except BaseException as exc:  # a thread's exception would otherwise be lost
            failed.append(exc)

    adders = [threading.Thread(target=add, args=(tag,)) for tag in ("A", "B")]
    for thread in adders:
        thread.start()
    try:
        wait_for_log(server, since, "embedding 30 edit(s)")  # a large batch is on the encoder now
        with server.client("small") as small:
            assert [e.id for e in small.list_edits(page_size=1).edits] == [mine.id]
            assert small.get_edit(mine.id) == mine
        # The reads came back before either large add was stored: they did not wait behind the embedding.
        assert not done and "to namespace big" not in server.log_text()[since:]
    finally:
        for thread in adders:
            thread.join()
    assert not failed, failed
    assert sorted(done) == ["A", "B"]


def test_a_batch_over_the_write_limit_is_resource_exhausted(server: LocalServer) -> None:
    batch = large_batch("C") * 3  # about 720k characters: more than the lane takes at once
    with server.client("big") as big, pytest.raises(ResourceExhausted, match="send them in smaller batches"):
        big.add_edits(batch)
