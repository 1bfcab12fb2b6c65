"""The second moment C per layer, computed once from the statistics texts and then read from disk.

Files are keyed by model fingerprint, layer, text sources and token count, and written atomically;
within a process each layer's C is also kept in memory (it is asked for at every edit).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Generator, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.models.arch import ArchTemplate
from server.parametric import stats
from server.parametric.targets import Progress

log = logging.getLogger(__name__)


def cache_key(model_id: str, layer: int, sources: Sequence[str], max_tokens: int) -> str:
    digest = hashlib.sha256("|".join((model_id, *sources)).encode()).hexdigest()[:16]
    return f"c-{digest}-layer{layer}-n{max_tokens}.safetensors"


class StatisticsCache:
    """C of each layer's down-projection inputs from the model's own samples and the text files."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        arch: ArchTemplate,
        model_id: str,
        cache_dir: Path,
        text_files: tuple[Path, ...],
        stats_tokens: int,
        model_samples: int,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._arch = arch
        self._text_files = text_files
        self._stats_tokens = stats_tokens
        self._model_samples = model_samples
        self._sources = tuple(str(p) for p in text_files) + (f"model-samples:{model_samples}",)
        self._model_id = model_id
        self._dir = cache_dir / "parametric"
        self._moments: dict[int, torch.Tensor] = {}
        self._texts: list[str] | None = None

    def second_moment(self, layer: int) -> Generator[Progress, None, torch.Tensor]:
        """C for the layer, (d_in, d_in) float32: from memory, from disk, or computed (yielding) and saved."""
        if layer in self._moments:
            return self._moments[layer]
        path = self._dir / cache_key(self._model_id, layer, self._sources, self._stats_tokens)
        if path.exists():
            moment = load_file(path)["C"]
        else:
            log.info("computing the second moment of layer %d's keys from %d tokens (once; cached at %s)",
                     layer, self._stats_tokens, path)
            yield Progress("statistics", 0, self._stats_tokens)
            moment = (yield from stats.second_moments(
                self._model, self._tokenizer, self._arch, [layer], self._stats_texts(), self._stats_tokens
            ))[layer]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({"C": moment.contiguous()}, str(tmp))
            os.replace(tmp, path)
        self._moments[layer] = moment
        return moment

    def _stats_texts(self) -> list[str]:
        """The model's own samples and the text files' lines, shuffled; made once per process."""
        if self._texts is None:
            texts = stats.sample_texts(self._model, self._tokenizer, self._model_samples)
            texts += stats.text_lines(self._text_files)
            random.Random(0).shuffle(texts)
            self._texts = texts
        return self._texts
