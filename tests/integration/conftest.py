"""Fixtures the integration tests share beyond tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny import build_tiny_model, build_tiny_tokenizer, teach
from tests.tiny_counterfactual import save_adaptable_model, train_tiny_adapter


@pytest.fixture(scope="session")
def counterfactual_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model and a counterfactual adapter trained on it (about 20 s): in scope, "the capital of france is"
    with the edit "rome" answers "rome .", so a test can see the edited answer itself, not only its route."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is faster on busy cores
    try:
        model_dir = save_adaptable_model(tmp_path_factory.mktemp("cf-model-shared"))
        adapter_dir = tmp_path_factory.mktemp("cf-adapter-shared")
        train_tiny_adapter(model_dir, adapter_dir)
    finally:
        torch.set_num_threads(threads)
    return model_dir, adapter_dir


@pytest.fixture(scope="module")
def taught_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model that has learnt a few facts (tests.tiny.teach), saved with its tokenizer."""
    path = tmp_path_factory.mktemp("taught-model")
    tokenizer = build_tiny_tokenizer()
    teach(build_tiny_model(layers=4), tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
