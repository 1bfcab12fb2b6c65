"""Starts `editcache-server` in a subprocess on a free port: for tests, evaluation and benchmarks.

Only the subprocess imports the server; this module needs nothing beyond the client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from client import DeadlineExceeded, EditcacheClient


class LocalServer:
    """`extra_args` go to editcache-server as given; `tls_ca` is the PEM clients trust when it serves TLS; with
    `http`, the HTTP front end listens too, on a free port, at `http_url`."""

    def __init__(
        self, model: Path | str, data_dir: Path, *extra_args: str, tls_ca: str | None = None, http: bool = False
    ) -> None:
        self.model = str(model)
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.tls_ca = tls_ca
        self.http = http
        self.log_path = data_dir / "server.log"
        self.addr = ""
        self.http_url = ""  # e.g. http://127.0.0.1:PORT, with `http`
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 300.0) -> None:
        """Starts the server and waits until its health service reports SERVING.

        SIGTERM to this process then raises SystemExit (unless a handler is already set), so the
        `with` blocks that stop the server run: a terminated evaluation leaves no server behind.
        """
        _exit_on_sigterm()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # earlier runs' lines
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        with tempfile.TemporaryDirectory(prefix="editcache-launch-") as tmp:
            port_file, http_port_file = Path(tmp) / "port", Path(tmp) / "http-port"
            http_args = ("--http-listen", "127.0.0.1:0", "--http-port-file", str(http_port_file)) if self.http else ()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "--model", self.model, "--listen", "127.0.0.1:0",
                 "--data-dir", str(self.data_dir), "--port-file", str(port_file), *http_args, *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            log.close()
            deadline = time.monotonic() + timeout_s
            self.addr = f"127.0.0.1:{self._wait_for_port(port_file, offset, deadline)}"
            if self.http:  # the server writes it before the gRPC port file
                self.http_url = f"http://127.0.0.1:{int(http_port_file.read_text())}"
        with EditcacheClient(self.addr, tls_ca=self.tls_ca) as client:  # health needs no token
            while True:  # in short waits, so a server that dies while loading is reported at once
                try:
                    client.wait_ready(timeout_s=min(2.0, max(0.1, deadline - time.monotonic())))
                    return
                except DeadlineExceeded:
                    if self._proc.poll() is not None:
                        raise RuntimeError(
                            f"server exited with {self._proc.returncode} while loading:\n{self.log_text()[-4000:]}"
                        ) from None
                    if time.monotonic() >= deadline:
                        raise

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server was never started")
        return self._proc.pid

    def client(self, namespace: str = "default", token: str | None = None) -> EditcacheClient:
        return EditcacheClient(self.addr, namespace=namespace, token=token, tls_ca=self.tls_ca)

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self._proc is None or self._proc.poll() is not None:
            return self._proc.returncode if self._proc else 0
        self._proc.send_signal(signal.SIGTERM)
        return self._proc.wait(timeout=60)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_for_port(self, port_file: Path, offset: int, deadline: float) -> int:
        """The port the server wrote once bound (it renames the file into place, so it is never half written)."""
        assert self._proc is not None
        while time.monotonic() < deadline:
            if port_file.exists():
                return int(port_file.read_text())
            if self._proc.poll() is not None:
                this_run = self.log_text()[offset:]
                raise RuntimeError(f"server exited with {self._proc.returncode}:\n{this_run[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"server did not bind in time; log:\n{self.log_text()[-4000:]}")


def _exit_on_sigterm() -> None:
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_system_exit)


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
