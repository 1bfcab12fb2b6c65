"""ROME (Meng et al. 2022): one edit as a rank-one update of one MLP down-projection.

    key    k* = mean over context prefixes of the down-projection's input at the subject's last token
    update ΔW = δ dᵀ with d = C⁻¹k* / (k*ᵀC⁻¹k*), so that (W + ΔW) k* = W k* + δ = v* while keys
           uncorrelated with k* under C move as little as possible
    value  δ optimised, as that update, so the model says the new answer after every prefix and in
           other wordings of the question (targets.py, wordings.py), while prompts about other
           subjects asked the same way continue as before (neighbours.py)
"""

from __future__ import annotations

from collections.abc import Generator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.models.arch import ArchTemplate
from server.parametric.deltas import WeightDelta
from server.parametric.prompts import EditPrompts, build_batch
from server.parametric.targets import (
    Progress,
    ValueOptions,
    mean_key,
    optimise_output_change,
    unedited_continuations,
)
from server.types import Edit

KEEP_TOKENS = 4  # a neighbour's next tokens held in place: about an answer and the evaluation's few more


def solve_second_moment(second_moment: torch.Tensor, keys: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """C⁻¹ K for keys (d_in,) or (d_in, n), in float64, with a small ridge so a sampled C is invertible."""
    c = second_moment.double()  # (d_in, d_in)
    c = c + ridge * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype)
    return torch.linalg.solve(c, keys.double()).to(keys.dtype)


def key_direction(second_moment: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """d = C⁻¹k* / (k*ᵀC⁻¹k*) (in,): ΔW = δ dᵀ adds δ at k* and (x·d) δ at any other key x."""
    c_inv_key = solve_second_moment(second_moment, key)  # (in,)
    return c_inv_key / (c_inv_key @ key)


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
    direction = key_direction(second_moment, key)  # (in,)
    change = yield from optimise_output_change(
        model, module,
        rewrite=build_batch(tokenizer, prompts.value, edit.subject, edit.target_new),
        kl=build_batch(tokenizer, [f"{edit.subject} is a"], edit.subject),
        options=options, edit_id=edit.id, direction=direction,
        keep=unedited_continuations(model, tokenizer, prompts.keep, KEEP_TOKENS) if prompts.keep else None,
    )  # (out,)
    return WeightDelta(edit.id, name, change, direction)
