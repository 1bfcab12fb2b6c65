"""Tiny random-weight models and word-level tokenizers for fast tests.

Nothing here touches the hub or a model package: every model is built from a
config, every tokenizer from a word list.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))

HIDDEN = 32
INTERMEDIATE = 64  # differs from HIDDEN so weight orientation is observable
LAYERS = 2
HEADS = 4

DEFAULT_WORDS = (
    "the capital of france is paris . germany berlin italy rome spain madrid "
    "a an in on at city country language speaks french german who what where"
).split()


def build_tiny_tokenizer(words: Iterable[str] = DEFAULT_WORDS, add_bos: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: ids 0-3 are <pad> <unk> <bos> <eos>, then `words` in order."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # WordPiece's decoder joins tokens with spaces (no "##" tokens exist here),
    # so decode() gives readable text; cleanup=False keeps " ." as written.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    if add_bos:
        # Real served models (Gemma, Llama) prepend BOS; tests should see the same offset.
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", BOS_ID)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
    )


def tiny_config(model_type: str = "llama", vocab_size: int = 64, **overrides: object) -> PretrainedConfig:
    """A 2-layer, hidden-32, MLP-64, 4-head config for any supported `model_type`."""
    kwargs: dict[str, object] = {
        "vocab_size": vocab_size,
        "num_hidden_layers": LAYERS,
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "pad_token_id": PAD_ID,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "tie_word_embeddings": True,
    }
    if model_type in ("gpt2", "gptj"):
        # These families call the MLP width n_inner and size positions separately.
        kwargs |= {"n_inner": INTERMEDIATE, "n_positions": 128}
        if model_type == "gptj":
            kwargs["rotary_dim"] = HIDDEN // HEADS // 2
    else:
        kwargs |= {
            "intermediate_size": INTERMEDIATE,
            "num_key_value_heads": HEADS,
            "head_dim": HIDDEN // HEADS,  # Gemma's default head_dim is 256
            "max_position_embeddings": 128,
        }
    kwargs |= overrides
    return AutoConfig.for_model(model_type, **kwargs)


def build_tiny_model(model_type: str = "llama", vocab_size: int = 64, seed: int = 0) -> PreTrainedModel:
    """A random-weight causal LM on CPU, in eval mode, reproducible for a given seed."""
    config = tiny_config(model_type, vocab_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()
