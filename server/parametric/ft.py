"""FT-L: fine-tune one MLP down-projection on the edit, each weight kept within ±ε of its original
(Zhu et al. 2020, the constrained fine-tuning baseline of the ROME paper).

The model's own weight is never written during training: the forward pass sees W + Δ through
`torch.func.functional_call`, so requests served between steps see the weights as they were.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import torch
from torch.func import functional_call
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.models.arch import ArchTemplate
from server.parametric.deltas import WeightDelta
from server.parametric.layers import LayerDefaults
from server.parametric.method import MethodContext, MethodRequest, one_at_a_time, with_request
from server.parametric.prompts import build_batch
from server.parametric.targets import Progress, answer_nll
from server.types import Edit


@dataclass(frozen=True)
class FtOptions:
    layer: int
    steps: int = 25
    lr: float = 5e-4
    norm_constraint: float = 5e-4  # ε, the largest change of any one weight
    stop_nll: float = 0.05


def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    arch: ArchTemplate,
    edit: Edit,
    options: FtOptions,
) -> Generator[Progress, None, WeightDelta]:
    """The dense delta (out, in) that fine-tuning on the edit's prompt and answer finds."""
    name = arch.mlp_out.format(options.layer)
    weight: torch.Tensor = model.get_submodule(name).weight  # type: ignore[assignment]  # (out, in); Conv1D (in, out)
    batch = build_batch(tokenizer, [edit.prompt], edit.subject, edit.target_new)
    change = torch.zeros_like(weight, requires_grad=True)
    optimiser = torch.optim.Adam([change], lr=options.lr)
    for step in range(options.steps):
        optimiser.zero_grad()
        logits = functional_call(
            model, {f"{name}.weight": weight + change},
            kwargs={"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                    "logits_to_keep": batch.answer_positions},
        ).logits
        nll = answer_nll(logits, batch.answer_ids)
        yield Progress("fine-tune", step + 1, options.steps, float(nll.detach()), edit.id)
        if nll.item() < options.stop_nll:
            break
        nll.backward()
        optimiser.step()
        with torch.no_grad():
            change.clamp_(-options.norm_constraint, options.norm_constraint)
    dense = change.detach() if arch.out_features_first else change.detach().T
    return WeightDelta(edit.id, name, dense.contiguous())


class FineTune:
    """One edit at a time, each trained with the earlier ones in place, at one layer."""

    name = "ft"
    batched = False
    reads_earlier = False

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        return (defaults.ft if request.layer is None else request.layer,)

    def check(self, request: MethodRequest) -> None:
        """Nothing beyond the editor's layer checks."""

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[WeightDelta]]:
        options = with_request(FtOptions(layer=context.layers[0]), request, "steps", "lr", "norm_constraint")
        return (yield from one_at_a_time(
            context, edits, lambda edit: fine_tune(context.model, context.tokenizer, context.arch, edit, options)
        ))
