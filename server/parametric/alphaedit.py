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
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch

from server.errors import InvalidArgument
from server.parametric.deltas import WeightDelta
from server.parametric.layers import LayerDefaults
from server.parametric.memit import MemitOptions, memit
from server.parametric.method import MethodContext, MethodRequest, layer_moments, value_options
from server.parametric.targets import Progress
from server.types import Edit

# Eigenvalues below this share of C's largest span the null space. Relative, so it means the same for
# any model's key scale (the paper's absolute 1e-2 fits its own models' statistics). Chosen on
# counterfact/train.json cases 0-9, single edits at Gemma-3-270M's layer 12 (scripts/sweep_parametric.py
# --method alphaedit --layers 12 --batch 1 --null-space-cutoff ...; docs/BENCHMARKS.md): 1e-3 keeps every
# edit (reliability 1.0) with greedy locality 0.8; 1e-2 and 1e-1 leak into more directions (0.5, 0.4); 1e-4
# and 1e-5 leave too few to write the edit (reliability 0.5, 0.0).
NULL_SPACE_CUTOFF = 1e-3
# α, the weight of ‖ΔW‖² against the edits' error: the paper's I (α = 1); the reference tunes it per
# model (its L2). An edit whose key keeps s = ‖P k₁‖² in the null space is written to the share s / (s + α).
RIDGE = 1.0


def null_space_projection(second_moment: torch.Tensor, cutoff: float) -> torch.Tensor:
    """P = U Uᵀ over C's eigenvectors with eigenvalue < cutoff · the largest; C (d, d) → P (d, d) float64."""
    eigenvalues, vectors = torch.linalg.eigh(second_moment.double())  # (d,), (d, d) columns
    kept = vectors[:, eigenvalues < cutoff * eigenvalues.max()]  # (d, m)
    return kept @ kept.T


def projected_update(
    projection: torch.Tensor, keys: torch.Tensor, wanted: torch.Tensor, ridge: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, V) with ΔW = R Vᵀ, V = (P K Kᵀ + ridge I)⁻¹ P K; keys (d_in, n), wanted (d_out, n)."""
    k = keys.double()  # (d_in, n)
    system = projection @ k @ k.T + ridge * torch.eye(k.shape[0], dtype=k.dtype)  # (d_in, d_in)
    return wanted, torch.linalg.solve(system, projection @ k).to(keys.dtype)  # (d_out, n), (d_in, n)


class AlphaEdit:
    """MEMIT's edits and layers, each layer's update confined to the null space of its preserved keys."""

    name = "alphaedit"
    batched = True

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
        return (yield from memit(
            context.model, context.tokenizer, context.arch, edits, context.prompts,
            MemitOptions(context.layers, value_options(request)),
            lambda layer, keys, wanted: projected_update(projections[layer], keys, wanted, RIDGE),
        ))
