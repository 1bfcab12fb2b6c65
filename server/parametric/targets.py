"""What an edit asks of one module, shared by ROME and MEMIT:

- the key: the module's input at the subject's last token, averaged over context prefixes (ROME's k*);
- the output change δ that makes the model produce the new answer: optimised with the answer's NLL,
  a KL term that keeps "{subject} is a" predicting as before, and weight decay (ROME's v* = W k* + δ);
  given the direction the update will read keys along, δ is tried as that update (on every token of
  every prompt), and a second KL term keeps prompts about other subjects continuing as before.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.parametric.prompts import KeepBatch, PromptBatch, build_keep_batch
from server.parametric.tap import adding_along_key, adding_to_output, at_positions, recording

T = TypeVar("T")


@dataclass(frozen=True)
class ValueOptions:
    steps: int = 25
    lr: float = 0.5
    kl_factor: float = 0.0625
    weight_decay: float = 0.5  # on ‖δ‖² / ‖original output‖²
    clamp_norm: float = 4.0  # ‖δ‖ ≤ clamp_norm · ‖original output‖
    stop_nll: float = 0.05  # stop early once the answer's mean NLL is below this
    keep_factor: float = 1.0  # on the KL of other subjects' prompts under the whole update


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


def forward(model: PreTrainedModel, batch: PromptBatch | KeepBatch, logits_at: torch.Tensor | int = 1) -> torch.Tensor:
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


def unedited_continuations(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], new_tokens: int
) -> KeepBatch:
    """Each prompt followed by the model's greedy continuation, kept from the prompt's last token on."""
    rows, lengths = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]  # (1, t)
            lengths.append(ids.shape[1])
            for _ in range(new_tokens - 1):
                ids = torch.cat([ids, model(input_ids=ids, logits_to_keep=1).logits[:, -1].argmax(-1, keepdim=True)], 1)
            rows.append(ids[0].tolist())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return build_keep_batch(rows, lengths, pad)


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
    direction: torch.Tensor | None = None,
    keep: KeepBatch | None = None,
) -> Generator[Progress, None, torch.Tensor]:
    """δ (d_out,) for the module's output at the subject's last token of every prompt.

    `rewrite` holds the prefixed prompts followed by the new answer; `kl` holds "{subject} is a".
    Without `direction`, δ is added at each subject token (MEMIT); with it (d_in,), δ is added as the
    rank-one update along it would add it (ROME), and `keep`'s continuations are held in place too.
    Weight decay and clamp measure δ against the original output of `scale_of` (default: the module
    itself, as ROME does; MEMIT measures against the residual stream of its last layer).
    Yields after each step (so the caller can hand the model to other work), returns δ.
    """
    with torch.no_grad():
        original_kl = torch.log_softmax(forward(model, kl)[:, -1].float(), dim=-1)  # (1, vocab)
        original_keep = None if keep is None else torch.log_softmax(forward(model, keep, keep.positions).float(), -1)
        _, outputs = module_io(model, module if scale_of is None else scale_of, rewrite)
    scale = outputs[0].norm()  # the original output at the first prompt
    delta = torch.zeros_like(outputs[0], requires_grad=True)  # (d_out,)
    optimiser = torch.optim.Adam([delta], lr=options.lr)

    def changed(batch: PromptBatch) -> AbstractContextManager[None]:
        if direction is None:
            return adding_to_output(module, batch.subject_last, delta)
        return adding_along_key(module, direction, delta)

    for step in range(options.steps):
        optimiser.zero_grad()
        with changed(rewrite):
            nll = answer_nll(forward(model, rewrite, rewrite.answer_positions), rewrite.answer_ids)
        with changed(kl):
            current_kl = torch.log_softmax(forward(model, kl)[:, -1].float(), dim=-1)
        drift = F.kl_div(current_kl, original_kl, log_target=True, reduction="batchmean")
        loss = nll + options.kl_factor * drift + options.weight_decay * delta.norm() ** 2 / scale**2
        if keep is not None and original_keep is not None and direction is not None:
            with adding_along_key(module, direction, delta):
                current_keep = torch.log_softmax(forward(model, keep, keep.positions).float(), -1)  # (n, m, vocab)
            bleed = F.kl_div(current_keep.flatten(0, 1), original_keep.flatten(0, 1), log_target=True,
                             reduction="batchmean")
            loss = loss + options.keep_factor * bleed
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
