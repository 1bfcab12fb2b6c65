"""Shared fixtures: a tiny model on disk and real editcache servers started as subprocesses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.launch import LocalServer
from tests.tiny import build_tiny_model, build_tiny_tokenizer

IKE_POOL = Path(__file__).parent / "fixtures" / "eval" / "counterfact_flat.json"


@pytest.fixture(scope="session", autouse=True)
def small_ike_pool() -> Iterator[None]:
    """Servers started by tests take their IKE demonstrations from a 3-record fixture, not 10k train records."""
    before = os.environ.get("EDITCACHE_IKE_POOL")
    os.environ["EDITCACHE_IKE_POOL"] = str(IKE_POOL)
    yield
    if before is None:
        del os.environ["EDITCACHE_IKE_POOL"]
    else:
        os.environ["EDITCACHE_IKE_POOL"] = before


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
