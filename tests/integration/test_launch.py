"""LocalServer's lifecycle seen from the process that started it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from client.launch import LocalServer

REPO = Path(__file__).parents[2]


def test_a_terminated_parent_stops_the_server_it_started(tiny_model_dir: Path, tmp_path: Path) -> None:
    # What `scripts/evaluate.py` does: start a server, work, stop it on the way out.
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from client.launch import LocalServer
        server = LocalServer(Path({str(tiny_model_dir)!r}), Path({str(tmp_path / "data")!r}))
        try:
            server.start()
            print(server.pid, flush=True)
            # Short sleeps, like the short RPCs evaluate.py makes: a signal that the kernel hands to one
            # of gRPC's threads runs its Python handler only when the main thread next wakes.
            while True:
                time.sleep(0.2)
        finally:
            server.stop()
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO)
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=90) == 128 + signal.SIGTERM
        try:
            os.kill(server_pid, 0)
            still_running = True
        except ProcessLookupError:
            still_running = False
        assert not still_running, "the server outlived the process that started it"
    finally:
        parent.kill()
        parent.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(server_pid, signal.SIGKILL)


def test_a_server_that_exits_before_binding_is_reported_with_its_log(tmp_path: Path) -> None:
    server = LocalServer("unused", tmp_path, "--threshold", "not-a-number")  # argparse exits before binding
    with pytest.raises(RuntimeError, match=r"server exited with 2:\n(.|\n)*--threshold"):
        server.start(timeout_s=60)
    assert server.addr == ""
