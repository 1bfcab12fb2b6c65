"""What an edit asks of one module, shared by ROME and MEMIT:

- the key: the module's input at the subject's last token, averaged over context prefixes (ROME's k*);
- the output change δ that makes the model produce the new answer: optimised with the answer's NLL,
  a KL term that keeps "{subject} is a" predicting as before, and weight decay (ROME's v* = W k* + δ).
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
    Yields after each step (so the caller can hand the model to other work), returns δ.
    """
    with torch.no_grad():
        original_kl = torch.log_softmax(forward(model, kl)[:, -1].float(), dim=-1)  # (1, vocab)
        _, outputs = module_io(model, module if scale_of is None else scale_of, rewrite)
    scale = outputs[0].norm()  # the original output at the first prompt
    delta = torch.zeros_like(outputs[0], requires_grad=True)  # (d_out,)
    optimiser = torch.optim.Adam([delta], lr=options.lr)
    for step in range(options.steps):
        optimiser.zero_grad()
        with adding_to_output(module, rewrite.subject_last, delta):
            nll = answer_nll(forward(model, rewrite, rewrite.answer_positions), rewrite.answer_ids)
        with adding_to_output(module, kl.subject_last, delta):
            current_kl = torch.log_softmax(forward(model, kl)[:, -1].float(), dim=-1)
        drift = F.kl_div(current_kl, original_kl, log_target=True, reduction="batchmean")
        loss = nll + options.kl_factor * drift + options.weight_decay * delta.norm() ** 2 / scale**2
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
