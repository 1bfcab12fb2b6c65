"""AlphaEdit (Fang et al., ICLR 2025): MEMIT whose update is projected onto the null space of the
preserved keys, so that ΔW k₀ ≈ 0 for the keys that must not move.

    P  = U Uᵀ over the eigenvectors of C = E[k₀ k₀ᵀ] whose eigenvalue is below the cut-off
         (C as cached for ROME and MEMIT, stats_cache.py)                                      (d_in, d_in)
    ΔW = R K₁ᵀ P (K₁ K₁ᵀ P + αI)⁻¹ = Σ_i r_i v_iᵀ with V = (P K₁ K₁ᵀ + αI)⁻¹ P K₁               (d_out, d_in)
         K₁ the edits' keys, R their share of the wanted change at this layer (as in memit.py), α the
         reference implementation's L2 term (the paper writes I).

V lies in P's range (V = P (K₁ − K₁ K₁ᵀ V)), so Vᵀ k₀ = Vᵀ P k₀ ≈ 0 for every key C holds. Each edit
keeps its own rank-one term per layer, so one edit rolls back alone and replay is exact.
The paper also adds the keys of earlier edits to the system (its cache_c) for sequential editing;
that is not done here: each application sees only C.

C is a statistic of ordinary text, so it does not hold the keys that matter most: the same question about
another subject, whose key at the subject's last token lies close to the edited one (CounterFact's neighbourhood,
subjects with the edit's old answer). So each application also preserves the keys of the edit's prompt about a
few such subjects (T-Patcher's table, memory_subjects.py), exactly: P' = P − Q Qᵀ, Q an orthonormal basis of
P K_n, so that Vᵀ k_n = 0 for each of them.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import InvalidArgument
from server.parametric.deltas import WeightDelta
from server.parametric.layers import LayerDefaults
from server.parametric.memit import MemitOptions, memit
from server.parametric.memory_subjects import SubjectTable, shipped_subjects
from server.parametric.method import MethodContext, MethodRequest, layer_moments, value_options
from server.parametric.prompts import build_batch
from server.parametric.targets import Progress, module_io
from server.types import Edit

# Eigenvalues below this share of C's largest span the null space. Relative, so it means the same for
# any model's key scale (the paper's absolute 1e-2 fits its own models' statistics). Chosen on
# counterfact/train.json cases 0-9, single edits at Gemma-3-270M's layer 12 (scripts/sweep_parametric.py
# --method alphaedit --layers 12 --batch 1 --null-space-cutoff ...; docs/BENCHMARKS.md): 1e-3 keeps every
# edit (reliability 1.0) with greedy locality 0.8; 1e-2 and 1e-1 leak into more directions (0.5, 0.4); 1e-4
# and 1e-5 leave too few to write the edit (reliability 0.5, 0.0).
NULL_SPACE_CUTOFF = 1e-3
# Subjects per edit whose keys are preserved exactly besides C's null space: those with the edit's old answer first
# (its `target_true`), then others asked the same question. 0 turns it off.
NEIGHBOUR_SUBJECTS = 16
# α, the weight of ‖ΔW‖² against the edits' error: the paper's I (α = 1); the reference tunes it per
# model (its L2). An edit whose key keeps s = ‖P k₁‖² in the null space is written to the share s / (s + α).
RIDGE = 1.0


def null_space_projection(second_moment: torch.Tensor, cutoff: float) -> torch.Tensor:
    """P = U Uᵀ over C's eigenvectors with eigenvalue < cutoff · the largest; C (d, d) → P (d, d) float64."""
    eigenvalues, vectors = torch.linalg.eigh(second_moment.double())  # (d,), (d, d) columns
    kept = vectors[:, eigenvalues < cutoff * eigenvalues.max()]  # (d, m)
    return kept @ kept.T


def without_directions(projection: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """P − Q Qᵀ, Q an orthonormal basis of P K: the projector onto the part of P's range orthogonal to every key;
    P (d, d) float64, keys (d, m) → (d, d) float64."""
    basis, sizes, _ = torch.linalg.svd(projection @ keys.double(), full_matrices=False)  # (d, m), (m,)
    q = basis[:, sizes > 1e-9 * sizes.max().clamp_min(1e-300)]  # keys outside P's range add nothing
    return projection - q @ q.T


def neighbour_keys(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, module: nn.Module,
                   prompts: Sequence[tuple[str, str]]) -> torch.Tensor:
    """The module's input at each (prompt, subject)'s subject token, (d_in, m); at least one prompt."""
    return torch.cat([module_io(model, module, build_batch(tokenizer, [p], s))[0] for p, s in prompts]).T


def neighbour_prompts(edits: Sequence[Edit], subjects: SubjectTable, n: int) -> list[tuple[str, str]]:
    """Each edit's prompt about up to n other subjects, those with its old answer first, with their subject."""
    return [(e.prompt.replace(e.subject, s), s) for e in edits
            for s in subjects.draw(e.prompt, e.subject, n, e.target_true, n)]


def projected_update(
    projection: torch.Tensor, keys: torch.Tensor, wanted: torch.Tensor, ridge: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, V) with ΔW = R Vᵀ, V = (P K Kᵀ + ridge I)⁻¹ P K; keys (d_in, n), wanted (d_out, n)."""
    k = keys.double()  # (d_in, n)
    system = projection @ k @ k.T + ridge * torch.eye(k.shape[0], dtype=k.dtype)  # (d_in, d_in)
    return wanted, torch.linalg.solve(system, projection @ k).to(keys.dtype)  # (d_out, n), (d_in, n)


@dataclass(frozen=True)
class AlphaEdit:
    """MEMIT's edits and layers, each layer's update confined to the null space of its preserved keys."""

    name = "alphaedit"
    batched = True
    subjects: SubjectTable | None = None  # the neighbours' subjects; None: the shipped table, read at the first edit
    neighbour_subjects: int = NEIGHBOUR_SUBJECTS

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        return request.layers or defaults.memit

    def check(self, request: MethodRequest) -> None:
        cutoff = request.null_space_cutoff
        if cutoff is not None and not 0.0 < cutoff <= 1.0:
            raise InvalidArgument(
                f"null_space_cutoff must be in (0, 1] (a share of C's largest eigenvalue), got {cutoff}"
            )

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[WeightDelta]]:
        cutoff = NULL_SPACE_CUTOFF if request.null_space_cutoff is None else request.null_space_cutoff
        moments = yield from layer_moments(context)
        projections = {layer: null_space_projection(c, cutoff) for layer, c in moments.items()}
        subjects = shipped_subjects() if self.subjects is None else self.subjects
        neighbours = neighbour_prompts(edits, subjects, self.neighbour_subjects)

        def update(layer: int, keys: torch.Tensor, wanted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            projection = projections[layer]
            if neighbours:
                module = context.model.get_submodule(context.arch.mlp_out.format(layer))
                # on the unedited model: the earlier layers' updates left these keys still, so they read the same
                preserved = neighbour_keys(context.model, context.tokenizer, module, neighbours)  # (d_in, m)
                projection = without_directions(projection, preserved)
            return projected_update(projection, keys, wanted, RIDGE)

        return (yield from memit(
            context.model, context.tokenizer, context.arch, edits, context.prompts,
            MemitOptions(context.layers, value_options(request)), update,
        ))
