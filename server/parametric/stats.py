"""The second moment C = E[k kᵀ] of an MLP down-projection's inputs, which ROME and MEMIT need.

No Wikipedia is reachable here, so the keys come from offline text: the model's own samples (free
text in its own distribution) and, when given, text files such as the train split's prompts.
They are cached on disk by stats_cache.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.models.arch import ArchTemplate
from server.parametric.prefixes import SEED_WORDS, generate_texts
from server.parametric.targets import Progress

log = logging.getLogger(__name__)

class _Stop(Exception):
    """Raised by a hook once the last needed layer has run: the rest of the forward pass is waste."""


def sample_texts(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int, new_tokens: int = 64
) -> list[str]:
    """n texts the model samples from the seed words, in batches of 32."""
    texts: list[str] = []
    for batch in range(0, n, 32):
        seeds = tuple(SEED_WORDS[i % len(SEED_WORDS)] for i in range(batch, min(n, batch + 32)))
        texts += generate_texts(model, tokenizer, seeds, new_tokens, seed=batch)
    return texts


def second_moments(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    arch: ArchTemplate,
    layers: Sequence[int],
    texts: Sequence[str],
    max_tokens: int,
    max_length: int = 64,
    batch_size: int = 16,
) -> Generator[Progress, None, dict[int, torch.Tensor]]:
    """C per layer, (d_in, d_in) float32, from at most `max_tokens` non-padding tokens of `texts`.

    Yields after each batch, with no hook left on the model, so other work can use it in between.
    """
    modules = {layer: model.get_submodule(arch.mlp_out.format(layer)) for layer in layers}
    last = model.get_submodule(arch.layers.format(max(layers)))
    sums: dict[int, torch.Tensor] = {}
    seen = 0
    for start in range(0, len(texts), batch_size):
        if seen >= max_tokens:
            break
        batch = tokenizer(
            list(texts[start : start + batch_size]), return_tensors="pt", padding=True, truncation=True,
            max_length=max_length,
        )
        mask = batch["attention_mask"].bool()  # (b, seq)
        budget = max_tokens - seen  # keep exactly max_tokens: drop the overflow's last tokens
        if int(mask.sum()) > budget:
            flat = mask.flatten()
            flat[flat.nonzero()[budget:, 0]] = False
            mask = flat.view_as(mask)
        _accumulate(model, modules, last, batch, mask, sums)
        seen += int(mask.sum())
        yield Progress("statistics", min(seen, max_tokens), max_tokens)
    if seen == 0:
        raise ValueError("no text to compute second-moment statistics from")
    return {layer: (total / seen).float() for layer, total in sums.items()}


def _accumulate(
    model: PreTrainedModel,
    modules: dict[int, torch.nn.Module],
    last: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    mask: torch.Tensor,
    sums: dict[int, torch.Tensor],
) -> None:
    """Adds Σ k kᵀ over the batch's masked tokens to each layer's sum."""

    def add(layer: int) -> Callable[..., None]:
        def hook(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            keys = args[0][mask].double()  # (tokens, d_in)
            sums[layer] = sums.get(layer, 0) + keys.T @ keys

        return hook

    def stop(*_: object) -> None:
        raise _Stop

    handles = [m.register_forward_pre_hook(add(layer)) for layer, m in modules.items()]
    handles.append(last.register_forward_hook(stop))
    try:
        with torch.inference_mode():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()


def text_lines(files: Sequence[Path]) -> list[str]:
    """The sentences of text files, one per line; JSON data files give their prompts and answers."""
    lines: list[str] = []
    for path in files:
        if path.suffix == ".json":
            for record in json.loads(path.read_text()):
                prompt, answer = record.get("prompt") or record.get("src"), record.get("ground_truth")
                answer = answer[0] if isinstance(answer, list) and answer else answer
                if isinstance(prompt, str):
                    lines.append(f"{prompt} {answer}" if isinstance(answer, str) else prompt)
                for key in ("rephrase_prompt", "locality_prompt"):
                    if isinstance(record.get(key), str):
                        lines.append(record[key])
        else:
            lines += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return lines

