"""ROME (Meng et al. 2022): one edit as a rank-one update of one MLP down-projection.

    key    k* = mean over context prefixes of the down-projection's input at the subject's last token
    value  v* = W k* + δ, δ optimised so the model says the new answer after every prefix and in other
           wordings of the question (targets.py, wordings.py)
    update ΔW = Λ (C⁻¹k*)ᵀ with Λ = (v* − W k*) / ((C⁻¹k*)ᵀ k*), so that (W + ΔW) k* = v*
           while keys uncorrelated with k* under C move as little as possible.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.models.arch import ArchTemplate
from server.parametric.deltas import WeightDelta, weight_out_in
from server.parametric.layers import LayerDefaults
from server.parametric.method import MethodContext, MethodRequest, one_at_a_time, value_options
from server.parametric.prompts import EditPrompts, build_batch
from server.parametric.targets import Progress, ValueOptions, mean_key, optimise_output_change
from server.types import Edit


def solve_second_moment(second_moment: torch.Tensor, keys: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """C⁻¹ K for keys (d_in,) or (d_in, n), in float64, with a small ridge so a sampled C is invertible."""
    c = second_moment.double()  # (d_in, d_in)
    c = c + ridge * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype)
    return torch.linalg.solve(c, keys.double()).to(keys.dtype)


def rank_one_update(
    weight: torch.Tensor, second_moment: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Λ, C⁻¹k*) with ΔW = Λ (C⁻¹k*)ᵀ; weight (out, in), key (in,), value (out,) → ((out,), (in,))."""
    c_inv_key = solve_second_moment(second_moment, key)  # (in,)
    lam = (value - weight @ key) / (c_inv_key @ key)  # (out,)
    return lam, c_inv_key


def rome(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    arch: ArchTemplate,
    edit: Edit,
    layer: int,
    second_moment: torch.Tensor,
    prompts: EditPrompts,
    options: ValueOptions,
) -> Generator[Progress, None, WeightDelta]:
    """The rank-one delta that writes `edit` into layer `layer`; yields progress between steps."""
    name = arch.mlp_out.format(layer)
    module = model.get_submodule(name)
    key = mean_key(model, module, build_batch(tokenizer, prompts.key, edit.subject))  # (in,)
    change = yield from optimise_output_change(
        model, module,
        rewrite=build_batch(tokenizer, prompts.value, edit.subject, edit.target_new),
        kl=build_batch(tokenizer, [f"{edit.subject} is a"], edit.subject),
        options=options, edit_id=edit.id,
    )  # (out,)
    weight = weight_out_in(model, name, arch)  # (out, in)
    with torch.no_grad():
        u, v = rank_one_update(weight, second_moment, key, weight @ key + change)
    return WeightDelta(edit.id, name, u, v)


class Rome:
    """One edit at a time, each computed with the earlier ones in place, at one layer."""

    name = "rome"
    batched = False
    reads_earlier = False

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        return (defaults.rome if request.layer is None else request.layer,)

    def check(self, request: MethodRequest) -> None:
        """Nothing beyond the editor's layer checks."""

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[WeightDelta]]:
        (layer,) = context.layers
        second_moment = yield from context.statistics.second_moment(layer)
        options = value_options(request)
        return (yield from one_at_a_time(context, edits, lambda edit: rome(
            context.model, context.tokenizer, context.arch, edit, layer, second_moment, context.prompts[edit.id],
            options,
        )))
