"""editcache-server's flags that are not settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server import cli
from server.cli import port_file_writer


def test_the_port_file_holds_the_bound_port_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "port"
    write = port_file_writer(path)
    write(50123)
    assert path.read_text() == "50123\n"
    write(50124)  # replaced whole
    assert path.read_text() == "50124\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["port"]  # the temporary name is gone


def test_main_hands_serve_a_writer_for_the_port_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def serve(
        config: object, auth: object, on_bound: Callable[[int], None] | None = None,
        on_http_bound: Callable[[int], None] | None = None,
    ) -> None:
        assert on_bound is not None and on_http_bound is None  # no --http-port-file
        on_bound(4242)

    monkeypatch.setattr("server.app.serve", serve)
    monkeypatch.delenv("EDITCACHE_LOG_LEVEL", raising=False)
    before = logging.getLogger().level
    try:
        assert cli.main(["--port-file", str(tmp_path / "port"), "--data-dir", str(tmp_path / "data")]) == 0
    finally:
        logging.getLogger().setLevel(before)
    assert (tmp_path / "port").read_text() == "4242\n"


def test_main_writes_the_http_port_to_its_own_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def serve(
        config: Any, auth: object, on_bound: Callable[[int], None] | None = None,
        on_http_bound: Callable[[int], None] | None = None,
    ) -> None:
        assert config.http_listen == "127.0.0.1:0" and on_http_bound is not None and on_bound is None
        on_http_bound(8123)

    monkeypatch.setattr("server.app.serve", serve)
    monkeypatch.delenv("EDITCACHE_LOG_LEVEL", raising=False)
    before = logging.getLogger().level
    try:
        argv = ["--http-listen", "127.0.0.1:0", "--http-port-file", str(tmp_path / "http-port"),
                "--data-dir", str(tmp_path / "data")]
        assert cli.main(argv) == 0
    finally:
        logging.getLogger().setLevel(before)
    assert (tmp_path / "http-port").read_text() == "8123\n"


def test_non_loopback_http_without_tokens_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--http-listen", "0.0.0.0:8000", "--data-dir", str(tmp_path / "data")]) == 2
    assert "refusing to listen on 0.0.0.0:8000" in capsys.readouterr().err
