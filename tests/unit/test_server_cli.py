"""editcache-server's flags that are not settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

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
    async def serve(config: object, auth: object, on_bound: Callable[[int], None] | None = None) -> None:
        assert on_bound is not None
        on_bound(4242)

    monkeypatch.setattr("server.app.serve", serve)
    monkeypatch.delenv("EDITCACHE_LOG_LEVEL", raising=False)
    before = logging.getLogger().level
    try:
        assert cli.main(["--port-file", str(tmp_path / "port"), "--data-dir", str(tmp_path / "data")]) == 0
    finally:
        logging.getLogger().setLevel(before)
    assert (tmp_path / "port").read_text() == "4242\n"
