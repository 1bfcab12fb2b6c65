"""Tiny random-weight models and word-level tokenizers for fast tests.

Nothing here touches the hub or a model package: every model is built from a
config, every tokenizer from a word list, and `write_tiny_gguf` writes a small
fp32 llama GGUF for conversion tests.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path

import gguf
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))

HIDDEN = 32
INTERMEDIATE = 64  # differs from HIDDEN so weight orientation is observable
LAYERS = 2
HEADS = 4

DEFAULT_WORDS = (
    *("the", "capital", "of", "france", "is", "paris", ".", "germany", "berlin", "italy", "rome"),
    *("spain", "madrid", "a", "an", "in", "on", "at", "city", "country", "language", "speaks"),
    *("french", "german", "who", "what", "where"),
)


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


def build_tiny_model(
    model_type: str = "llama", vocab_size: int = 64, seed: int = 0, layers: int = LAYERS
) -> PreTrainedModel:
    """A random-weight causal LM on CPU, in eval mode, reproducible for a given seed whatever the release."""
    config = tiny_config(model_type, vocab_size, num_hidden_layers=layers)
    with torch.random.fork_rng(devices=[]):  # from_config draws too: leave the caller's generator alone
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    seeded_init(model, seed)
    return model.eval()


def seeded_init(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Gives every random parameter values drawn from the test's own seed, not from transformers' init.

    A release that changes how transformers initialises (or in what order it draws) would otherwise change
    every tiny model, and with it what the tests can teach them. Each tensor has its own generator, seeded by
    `seed` and its name: matrices and embeddings get N(0, std); vectors that the library set to one constant
    (norm scales: ones, or zeros where the norm adds one as Gemma's does) keep it; other vectors (biases) are 0.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
                param.copy_(torch.randn(param.shape, generator=generator) * std)
            elif not bool((param == param.flatten()[0]).all()):
                param.zero_()


def write_tiny_gguf(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a 2-layer fp32 llama GGUF with a byte-level BPE vocabulary; returns its tensors by GGUF name."""
    # Byte-level alphabet (so any text encodes) plus one merged token, because transformers needs merges.
    tokens = ["<|endoftext|>", *sorted(bytes_to_unicode().values()), "hi"]
    rng = np.random.default_rng(seed)
    vocab, head_dim = len(tokens), HIDDEN // HEADS
    shapes = {"token_embd.weight": (vocab, HIDDEN), "output_norm.weight": (HIDDEN,), "output.weight": (vocab, HIDDEN)}
    for i in range(LAYERS):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (HIDDEN,),
            f"blk.{i}.ffn_norm.weight": (HIDDEN,),
            **{f"blk.{i}.{n}.weight": (HIDDEN, HIDDEN) for n in ("attn_q", "attn_k", "attn_v", "attn_output")},
            f"blk.{i}.ffn_gate.weight": (INTERMEDIATE, HIDDEN),
            f"blk.{i}.ffn_up.weight": (INTERMEDIATE, HIDDEN),
            f"blk.{i}.ffn_down.weight": (HIDDEN, INTERMEDIATE),
        }
    tensors = {name: (rng.standard_normal(shape) * 0.02).astype(np.float32) for name, shape in shapes.items()}

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (vocab - 1))
    writer.add_token_merges(["h i"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


FACTS = (
    "the capital of france is paris",
    "the capital of germany is berlin",
    "the capital of italy is rome",
    "the capital of spain is madrid",
)


def teach(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, sentences: Iterable[str] = FACTS,
          max_steps: int = 1000, seed: int = 0, until: float = 0.99) -> PreTrainedModel:
    """Trains the model on the sentences until each one's last word has probability above `until` (a second or
    two), so it knows facts an editor can change. Raises if `max_steps` are not enough."""
    batch = tokenizer(list(sentences), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(max_steps):
            if step % 25 == 0 and _last_word_probability(model, batch).min() > until:
                break
            optimiser.zero_grad()
            model(**batch, labels=labels).loss.backward()
            optimiser.step()
        else:
            raise AssertionError(f"{max_steps} steps did not teach the tiny {model.config.model_type} its sentences")
    return model.eval().requires_grad_(False)


def _last_word_probability(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[sentences]: the probability each sentence's last token gets after the rest of it."""
    model.eval()  # no dropout while measuring
    with torch.no_grad():
        logits = model(**batch).logits  # [sentences, tokens, vocab]
    model.train()
    last = batch["attention_mask"].sum(1) - 1  # [sentences]: index of the last real token
    rows = torch.arange(len(last))
    return logits[rows, last - 1].softmax(-1)[rows, batch["input_ids"][rows, last]]
