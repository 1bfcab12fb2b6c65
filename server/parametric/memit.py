"""MEMIT (Meng et al. 2023): a batch of edits spread over a range of MLP layers.

    targets  z_i = the residual stream after the range's last layer L at edit i's subject token, once
             the change δ_i that makes the model say the new answer is added to layer L's MLP output
             (targets.py, at L's down-projection as ROME does, so one layer can always write it)
    per layer l = l_1 … L, in order, on the model with the earlier layers' updates in place:
             K  the keys of every edit at layer l               (d_in, n)
             R  (z − current residual at L) / (layers left)     (d_out, n), the share layer l carries
             ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ = Σ_i r_i v_iᵀ with V = (λC + K Kᵀ)⁻¹ K: one rank-one term per edit,
             so each edit can be rolled back alone.

Gemma 2 and 3 normalise the MLP's output before adding it to the residual stream, so one layer adds a
vector of nearly fixed size and an edit can mostly turn it; there, R is first mapped through that norm
(`through_norm`) to the smallest change of the down-projection's output that makes it. Both choices are
measured on Gemma-3-270M: with δ optimised on the residual stream (the paper's GPT-J recipe) and the
norm solved without the size penalty, the changes grew to 60× the layer's output and three edits broke
every answer; with only the penalty, no edit took.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.models.arch import ArchTemplate
from server.parametric.deltas import WeightDelta, temporarily_applied
from server.parametric.layers import LayerDefaults
from server.parametric.method import MethodContext, MethodRequest, layer_moments, value_options
from server.parametric.prompts import EditPrompts, build_batch
from server.parametric.rome import solve_second_moment
from server.parametric.tap import adding_to_output
from server.parametric.targets import Progress, ValueOptions, mean_key, module_io, optimise_output_change
from server.types import Edit

NORM_PENALTY = 1e-3  # on ‖Δo‖² / ‖o‖² in through_norm: picks the smallest of equally good changes
MOM2_WEIGHT = 1e4  # λ: how strongly C holds other keys in place against the edits

# (layer, keys K (d_in, n), wanted changes R (d_out, n)) → (R', V), (d_out, n) and (d_in, n), with ΔW = R' Vᵀ:
# how one layer's share of the edits becomes its update (MEMIT's below, AlphaEdit's in alphaedit.py).
LayerUpdate = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class MemitOptions:
    layers: tuple[int, ...]
    value: ValueOptions = field(default_factory=ValueOptions)


def spread_update(
    second_moment: torch.Tensor, keys: torch.Tensor, wanted: torch.Tensor, mom2_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, V) with ΔW = R Vᵀ, V = (λC + K Kᵀ)⁻¹ K; keys (d_in, n), wanted (d_out, n) → (d_out, n), (d_in, n)."""
    c = mom2_weight * second_moment.double() + keys.double() @ keys.double().T  # (d_in, d_in)
    return wanted, solve_second_moment(c, keys, ridge=0.0).to(keys.dtype)


def through_norm(norm: nn.Module, outputs: torch.Tensor, wanted: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """The smallest Δo with norm(o + Δo) ≈ norm(o) + wanted, for outputs o and wanted changes (n, d).

    A norm ignores its input's scale, so without the small penalty on ‖Δo‖ any multiple along the
    solution's ray would do, and the optimiser may return a huge one.
    """
    with torch.no_grad():
        goal = norm(outputs) + wanted
        scale = outputs.norm(dim=-1, keepdim=True) ** 2  # (n, 1)
    change = torch.zeros_like(wanted).requires_grad_(True)
    optimiser = torch.optim.LBFGS([change], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = ((norm(outputs + change) - goal) ** 2).sum() + NORM_PENALTY * (change**2 / scale).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return change.detach()


def memit(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    arch: ArchTemplate,
    edits: Sequence[Edit],
    prompts: Mapping[str, EditPrompts],
    options: MemitOptions,
    update: LayerUpdate,
) -> Generator[Progress, None, list[WeightDelta]]:
    """One rank-one delta per edit and layer (`prompts` by edit id); yields progress between steps."""
    layers = sorted(options.layers)
    block = model.get_submodule(arch.layers.format(layers[-1]))
    last_mlp = model.get_submodule(arch.mlp_out.format(layers[-1]))
    plain = {e.id: build_batch(tokenizer, [e.prompt], e.subject) for e in edits}

    targets = []
    for edit in edits:
        change = yield from optimise_output_change(
            model, last_mlp,
            rewrite=build_batch(tokenizer, prompts[edit.id].value, edit.subject, edit.target_new),
            kl=build_batch(tokenizer, [f"{edit.subject} is a"], edit.subject),
            options=options.value, edit_id=edit.id, scale_of=block,
        )  # (d_model,), at L's down-projection output
        with adding_to_output(last_mlp, plain[edit.id].subject_last, change):
            targets.append(module_io(model, block, plain[edit.id])[1][0])
    z = torch.stack(targets)  # (n, d_model)

    deltas: list[WeightDelta] = []
    for i, layer in enumerate(layers):
        name = arch.mlp_out.format(layer)
        module = model.get_submodule(name)
        with temporarily_applied(model, arch, deltas):
            keys = torch.stack([
                mean_key(model, module, build_batch(tokenizer, prompts[e.id].key, e.subject)) for e in edits
            ])  # (n, d_in)
            current = torch.stack([module_io(model, block, plain[e.id])[1][0] for e in edits])  # (n, d_model)
            outputs = torch.stack([module_io(model, module, plain[e.id])[1][0] for e in edits])  # (n, d_model)
        wanted = (z - current) / (len(layers) - i)  # (n, d_model)
        if arch.mlp_out_norm is not None:
            wanted = through_norm(model.get_submodule(arch.mlp_out_norm.format(layer)), outputs, wanted)
        r, v = update(layer, keys.T, wanted.T)
        deltas += [WeightDelta(e.id, name, r[:, j].contiguous(), v[:, j].contiguous()) for j, e in enumerate(edits)]
        yield Progress("layer", i + 1, len(layers))
    return deltas


class Memit:
    """All edits at once, spread over a range of layers; C holds other keys in place."""

    name = "memit"
    batched = True
    reads_earlier = False

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        return request.layers or defaults.memit

    def check(self, request: MethodRequest) -> None:
        """Nothing beyond the editor's layer checks."""

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[WeightDelta]]:
        moments = yield from layer_moments(context)
        mom2_weight = MOM2_WEIGHT if request.mom2_weight is None else request.mom2_weight
        return (yield from memit(
            context.model, context.tokenizer, context.arch, edits, context.prompts,
            MemitOptions(context.layers, value_options(request)),
            lambda layer, keys, wanted: spread_update(moments[layer], keys, wanted, mom2_weight),
        ))
