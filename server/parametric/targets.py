"""What an edit asks of one module, shared by ROME and MEMIT:

- the key: the module's input at the subject's last token, averaged over context prefixes (ROME's k*);
- the output change δ that makes the model produce the new answer: optimised with the answer's NLL,
  a KL term that keeps "{subject} is a" predicting as before, and weight decay (ROME's v* = W k* + δ);
  optionally a KL term that keeps what follows the answer as the unedited model continues "prompt + answer"
  (without it the edited prompt repeats its answer: the value at the subject, which every later position
  reads, keeps asking for it; docs/BENCHMARKS.md, "Fluency").
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from server.parametric.prompts import PromptBatch
from server.parametric.tap import adding_to_output, at_positions, recording

T = TypeVar("T")


@dataclass(frozen=True)
class ValueOptions:
    steps: int = 25
    lr: float = 0.5
    kl_factor: float = 0.0625
    weight_decay: float = 0.5  # on ‖δ‖² / ‖original output‖²
    clamp_norm: float = 4.0  # ‖δ‖ ≤ clamp_norm · ‖original output‖
    stop_nll: float = 0.05  # stop early once the answer's mean NLL is below this
    # The unedited model's greedy continuation of each value prompt followed by the answer, this many tokens,
    # is held by a KL term of weight `continuation_factor` at the positions that predict it (0: no term).
    # 8 on counterfact/train.json cases 0-9 (AlphaEdit at layer 12, single edits): the edited prompt's fluency
    # 1.20 -> 3.32 bits (unedited 4.27), greedy locality 0.8 -> 0.9, generalization 0.8 -> 0.7, about 2x the
    # time per edit (docs/BENCHMARKS.md, "Fluency: holding the continuation after the answer").
    continuation_tokens: int = 8
    continuation_factor: float = 1.0


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int
    total: int
    loss: float | None = None
    edit_id: str | None = None


def finish(steps: Generator[Progress, None, T]) -> T:
    """Runs a stepwise computation to its end in one go (scripts and tests; the server steps it)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def forward(model: PreTrainedModel, batch: PromptBatch, logits_at: torch.Tensor | int = 1) -> torch.Tensor:
    """Logits only at `logits_at` ((n, t) positions per row, or the last k): the vocabulary is most of the cost."""
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=logits_at).logits


def module_io(model: PreTrainedModel, module: nn.Module, batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's input (n, d_in) and output (n, d_out) at each row's subject token."""
    with torch.no_grad(), recording(module) as seen:
        forward(model, batch)
    assert seen.input is not None and seen.output is not None, "the module did not run"
    return at_positions(seen.input, batch.subject_last), at_positions(seen.output, batch.subject_last)


def mean_key(model: PreTrainedModel, module: nn.Module, batch: PromptBatch) -> torch.Tensor:
    """k*: the module's input at the subject's last token, averaged over the batch's prompts. (d_in,)"""
    keys, _ = module_io(model, module, batch)
    return keys.mean(dim=0)


@dataclass(frozen=True)
class Continuation:
    """What the unedited model says after each value prompt's answer, and how sure it is of it."""

    batch: PromptBatch  # the value prompts, their answer, then `tokens` greedy tokens, right-padded
    positions: torch.Tensor  # (n, tokens) the positions that predict each continuation token
    logprobs: torch.Tensor  # (n, tokens, vocab) the unedited model's log-probabilities there


def extend_greedily(model: PreTrainedModel, batch: PromptBatch, tokens: int) -> tuple[PromptBatch, torch.Tensor]:
    """Each row of `batch` extended by the model's `tokens` greedy next tokens, as it is now, and the positions
    (n, tokens) that predicted them."""
    lengths = batch.attention_mask.sum(dim=1)  # (n,) right-padded: a row's tokens are its first `length`
    rows = torch.arange(len(lengths))
    width = int(lengths.max()) + tokens
    ids = torch.zeros(len(lengths), width, dtype=batch.input_ids.dtype)  # padding is masked, so any id does
    ids[:, : batch.input_ids.shape[1]] = batch.input_ids * batch.attention_mask
    mask = torch.zeros_like(ids)
    mask[:, : batch.input_ids.shape[1]] = batch.attention_mask
    positions = (lengths - 1)[:, None] + torch.arange(tokens)[None, :]  # (n, tokens): position j predicts token j

    def extended() -> PromptBatch:
        return PromptBatch(ids, mask, batch.subject_last, batch.answer_ids, batch.answer_positions)

    with torch.no_grad():
        for j in range(tokens):  # without a cache: a few tokens of a short batch, once per edit
            logits = forward(model, extended(), positions[:, j : j + 1])  # (n, 1, vocab)
            ids[rows, positions[:, j] + 1] = logits[:, 0].argmax(dim=-1)
            mask[rows, positions[:, j] + 1] = 1
    return extended(), positions


def continue_greedily(model: PreTrainedModel, batch: PromptBatch, tokens: int) -> Continuation:
    """Each row of `batch` (prompt + answer) extended by the model's `tokens` greedy next tokens, as it is now."""
    extended, positions = extend_greedily(model, batch, tokens)
    with torch.no_grad():
        logprobs = torch.log_softmax(forward(model, extended, positions).float(), dim=-1)
    return Continuation(extended, positions, logprobs)


def held_kl(logits: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean over rows and positions of KL(original ‖ current); logits and log-probabilities (n, t, vocab)."""
    current = torch.log_softmax(logits.float(), dim=-1)
    return (original.exp() * (original - current)).sum(dim=-1).mean()


def answer_nll(logits: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the mean NLL of the answer tokens; logits (n, t, vocab), answer_ids (t,)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # (n, t, vocab)
    picked = logprobs.gather(2, answer_ids.expand(logits.shape[0], -1)[..., None])[..., 0]  # (n, t)
    return -picked.mean()


def optimise_output_change(
    model: PreTrainedModel,
    module: nn.Module,
    rewrite: PromptBatch,
    kl: PromptBatch,
    options: ValueOptions,
    edit_id: str | None = None,
    scale_of: nn.Module | None = None,
) -> Generator[Progress, None, torch.Tensor]:
    """δ (d_out,) added to the module's output at the subject's last token of every prompt.

    `rewrite` holds the prefixed prompts followed by the new answer; `kl` holds "{subject} is a".
    Weight decay and clamp measure δ against the original output of `scale_of` (default: the module
    itself, as ROME does; MEMIT measures against the residual stream of its last layer).
    With `options.continuation_tokens`, the positions after the answer are held to the unedited model's
    continuation of the same text (prompt + answer), read once before optimising.
    Yields after each step (so the caller can hand the model to other work), returns δ.
    """
    with torch.no_grad():
        original_kl = torch.log_softmax(forward(model, kl)[:, -1].float(), dim=-1)  # (1, vocab)
        _, outputs = module_io(model, module if scale_of is None else scale_of, rewrite)
    after = continue_greedily(model, rewrite, options.continuation_tokens) if options.continuation_tokens else None
    scale = outputs[0].norm()  # the original output at the first prompt
    delta = torch.zeros_like(outputs[0], requires_grad=True)  # (d_out,)
    optimiser = torch.optim.Adam([delta], lr=options.lr)
    for step in range(options.steps):
        optimiser.zero_grad()
        with adding_to_output(module, rewrite.subject_last, delta):
            if after is None:
                nll = answer_nll(forward(model, rewrite, rewrite.answer_positions), rewrite.answer_ids)
                continuation = torch.zeros(())
            else:  # one pass for the answer's positions and the continuation's after them
                t = rewrite.answer_ids.shape[0]
                logits = forward(model, after.batch, torch.cat([rewrite.answer_positions, after.positions], dim=1))
                nll = answer_nll(logits[:, :t], rewrite.answer_ids)
                continuation = held_kl(logits[:, t:], after.logprobs)
        with adding_to_output(module, kl.subject_last, delta):
            current_kl = torch.log_softmax(forward(model, kl)[:, -1].float(), dim=-1)
        drift = F.kl_div(current_kl, original_kl, log_target=True, reduction="batchmean")
        loss = (nll + options.kl_factor * drift + options.continuation_factor * continuation
                + options.weight_decay * delta.norm() ** 2 / scale**2)
        yield Progress("value", step + 1, options.steps, float(nll.detach()), edit_id)
        if nll.item() < options.stop_nll:
            break
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            limit = options.clamp_norm * scale
            if delta.norm() > limit:
                delta.mul_(limit / delta.norm())
    return delta.detach()
