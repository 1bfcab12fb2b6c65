"""Shared fixtures: a tiny model on disk and real editcache servers started as subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.launch import LocalServer
from tests.tiny import build_tiny_model, build_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 2-layer llama and its word-level tokenizer, saved as a Hugging Face folder."""
    path = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model().save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def running_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One server on the tiny model for the whole session; tests use their own namespaces."""
    server = LocalServer(tiny_model_dir, tmp_path_factory.mktemp("server-data"))
    server.start()
    yield server
    server.stop()
