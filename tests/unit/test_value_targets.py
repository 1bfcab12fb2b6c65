"""The value optimisation (targets.py): the unedited continuation it reads, and the term that holds it."""

from __future__ import annotations

import functools

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from server.parametric.prompts import build_batch
from server.parametric.tap import adding_to_output
from server.parametric.targets import ValueOptions, continue_greedily, finish, held_kl, optimise_output_change
from tests.tiny import build_tiny_model, build_tiny_tokenizer, teach

# Each fact goes on after its answer, so the model has a continuation to keep; it names the country, which the
# edited "is" also holds, so a δ written there reaches it.
SENTENCES = (
    "the capital of france is paris . france speaks french",
    "the capital of germany is berlin . germany speaks german",
    "the capital of italy is rome . italy speaks a",
    "the capital of spain is madrid . spain speaks an",
)
EDITED = "the capital of france is"  # → berlin
SUBJECT = "france is"  # a 4-layer model taught four sentences holds the fact at "is" (test_parametric_editor.py)
MODULE = "model.layers.0.mlp.down_proj"


@functools.cache
def taught() -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    tokenizer = build_tiny_tokenizer()
    return teach(build_tiny_model("llama", layers=4), tokenizer, SENTENCES), tokenizer


def test_the_continuation_is_the_models_greedy_one_after_each_row() -> None:
    model, tokenizer = taught()
    # Rows of different lengths, so the shorter one is padded and its continuation starts earlier.
    texts = [EDITED, f"so {EDITED}"]
    batch = build_batch(tokenizer, texts, SUBJECT, "berlin")
    after = continue_greedily(model, batch, tokens=3)
    for row, text in enumerate(texts):
        ids = tokenizer(f"{text} berlin", return_tensors="pt")
        expected = model.generate(**ids, max_new_tokens=3, do_sample=False)[0]  # type: ignore[operator]
        length = len(expected)
        assert after.batch.input_ids[row, :length].tolist() == expected.tolist()
        assert after.batch.attention_mask[row].sum() == length
        assert after.positions[row].tolist() == [length - 4, length - 3, length - 2]
    assert after.logprobs.shape == (2, 3, model.config.vocab_size)
    assert float(held_kl(after.logprobs, after.logprobs)) == 0.0  # the model as it was holds it exactly


def continuation_drift(continuation_tokens: int) -> tuple[float, float]:
    """(the answer's NLL, the KL of the 3 tokens after it from the unedited continuation) with the optimised δ."""
    # The tiny model's continuation moves little in absolute terms (KL about 0.06), so the term is weighted up
    # to dominate the answer's NLL as it does on a real model, where the repetition costs nats.
    model, tokenizer = taught()
    module = model.get_submodule(MODULE)
    rewrite = build_batch(tokenizer, [EDITED], SUBJECT, "berlin")
    options = ValueOptions(steps=60, continuation_tokens=continuation_tokens, continuation_factor=100.0, stop_nll=0.0)
    delta = finish(optimise_output_change(model, module, rewrite, build_batch(tokenizer, [f"{SUBJECT} a"], SUBJECT),
                                          options))
    after = continue_greedily(model, rewrite, tokens=3)
    t = len(rewrite.answer_ids)
    positions = torch.cat([rewrite.answer_positions, after.positions], dim=1)
    with torch.no_grad(), adding_to_output(module, rewrite.subject_last, delta):
        logprobs = torch.log_softmax(model(input_ids=after.batch.input_ids, attention_mask=after.batch.attention_mask,
                                           logits_to_keep=positions).logits, dim=-1)
    nll = -float(logprobs[0, 0, rewrite.answer_ids[0]])
    return nll, float(held_kl(logprobs[:, t:], after.logprobs))


def test_the_continuation_term_keeps_what_follows_the_answer_as_the_unedited_model_says_it() -> None:
    nll_without, drift_without = continuation_drift(continuation_tokens=0)
    nll_with, drift_with = continuation_drift(continuation_tokens=3)
    assert nll_without < 0.3 and nll_with < 0.3, "both write the new answer"
    # Without the term the δ that says "berlin" also moves what comes after it; with it, far less.
    assert drift_without > 0.03
    assert drift_with < drift_without / 10
