"""Crashing a LocalServer on purpose: only tests need it, so it lives here, not in the shipped client."""

from __future__ import annotations

import signal

from client.launch import LocalServer


def kill(server: LocalServer) -> None:
    """SIGKILL the server and reap it: no shutdown code runs, as in a crash."""
    process = server._proc  # the Popen, so that LocalServer sees the exit when it stops or restarts
    if process is None:
        raise RuntimeError("the server was never started")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
