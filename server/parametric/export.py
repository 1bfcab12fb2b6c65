"""Writes the served (edited) model as a Hugging Face directory, for use outside the server."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import FailedPrecondition, InvalidArgument


def export_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """The model and its tokenizer into `path`, an absolute directory that is new or empty."""
    if not path.is_absolute():
        raise InvalidArgument(f"export path must be absolute (a path on the server), got {str(path)!r}")
    if path.exists() and any(path.iterdir()):
        raise FailedPrecondition(f"export path {str(path)!r} exists and is not empty; choose a new directory")
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
