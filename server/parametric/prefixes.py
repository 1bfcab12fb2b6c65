"""Context prefixes the model writes itself, so keys and values are averaged over contexts (ROME §3.1)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# ROME's seeds for its generated context templates.
SEED_WORDS = ("The", "Therefore", "Because", "I", "You")


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    seeds: tuple[str, ...],
    new_tokens: int,
    seed: int = 0,
) -> list[str]:
    """One sampled continuation (top-k 5) per seed text, batched; reproducible for a given seed."""
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generate() continues from the last column
    try:
        inputs = tokenizer(list(seeds), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = saved_side
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        output = model.generate(  # type: ignore[operator]
            **inputs, do_sample=True, top_k=5, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    texts = tokenizer.batch_decode(output, skip_special_tokens=True)
    # Braces and newlines would read as template syntax or paragraph breaks; ROME strips them too.
    return [" ".join(t.replace("{", " ").replace("}", " ").split()) for t in texts]


def context_prefixes(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int, new_tokens: int
) -> tuple[str, ...]:
    """"" (the prompt alone) followed by n short generated texts, cycling through the seed words."""
    seeds = tuple(SEED_WORDS[i % len(SEED_WORDS)] for i in range(n))
    return ("", *generate_texts(model, tokenizer, seeds, new_tokens)) if n else ("",)
