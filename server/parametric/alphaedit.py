"""AlphaEdit (Fang et al., ICLR 2025): MEMIT whose update is projected onto the null space of the
preserved keys, so that ΔW k₀ ≈ 0 for the keys that must not move.

    P  = U Uᵀ over the eigenvectors of C = E[k₀ k₀ᵀ] whose eigenvalue is below the cut-off
         (C as cached for ROME and MEMIT, stats_cache.py)                                      (d_in, d_in)
    ΔW = R K₁ᵀ P (K₁ K₁ᵀ P + αI)⁻¹ = Σ_i r_i v_iᵀ with V = (P K₁ K₁ᵀ + αI)⁻¹ P K₁               (d_out, d_in)
         K₁ the edits' keys, R their share of the wanted change at this layer (as in memit.py), α the
         reference implementation's L2 term (the paper writes I).

V lies in P's range (αV = P (K₁ − A V), A the keys' moment below), so Vᵀ k₀ = Vᵀ P k₀ ≈ 0 for every key C holds.
Each edit keeps its own rank-one term per layer, so one edit rolls back alone and replay is exact.

Sequential editing: the keys K_p of the baked edits (the ledger's, any method's and namespace's) join the system,
as the paper's cache_c: V = (P A + αI)⁻¹ P K₁ with A = K_p K_pᵀ + K₁ K₁ᵀ, so a new update keeps ΔW K_p small
(measured: 40 edits one after another kept all 40 instead of 33; docs/BENCHMARKS.md, "AlphaEdit, one edit after
another"). K_p is read at each application on the served model, one key per earlier edit at the subject's last
token of its bare prompt (K₁ averages context prefixes; one forward per 32 earlier prompts instead of one per
edit), where the paper keeps the keys it solved for. So nothing beyond the deltas is stored: replay and rollback stay
exact, and a rolled-back edit's key is no longer held by later applications; the updates solved while it was held
stay as they were (the weights are the remaining deltas' sum, not what those edits alone would have produced). An
earlier edit of a subject a new edit changes is not held: the new edit must move that subject's key.

C is a statistic of ordinary text, so it does not hold the keys that matter most: the same question about
another subject, whose key at the subject's last token lies close to the edited one (CounterFact's neighbourhood,
subjects with the edit's old answer). `neighbour_subjects` > 0 also preserves the keys of the edit's prompt about
that many such subjects (T-Patcher's table, memory_subjects.py), exactly: P' = P − Q Qᵀ, Q an orthonormal basis of
P K_n, so that Vᵀ k_n = 0 for each of them. It is off by default: with 16, `counterfact/val.json`'s first 50 kept
no more neighbours (greedy 0.76 either way) and lost paraphrases (0.72 → 0.66; docs/BENCHMARKS.md, "AlphaEdit with
the neighbourhood's keys"). Zero on 16 drawn subjects' keys does not carry over to the neighbourhood's own.
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
from server.parametric.tap import at_positions, recording_each
from server.parametric.targets import Progress, forward
from server.types import Edit, subject_key

# Eigenvalues below this share of C's largest span the null space. Relative, so it means the same for
# any model's key scale (the paper's absolute 1e-2 fits its own models' statistics). Chosen on
# counterfact/train.json cases 0-9, single edits at Gemma-3-270M's layer 12 (scripts/sweep_parametric.py
# --method alphaedit --layers 12 --batch 1 --null-space-cutoff ...; docs/BENCHMARKS.md): 1e-3 keeps every
# edit (reliability 1.0) with greedy locality 0.8; 1e-2 and 1e-1 leak into more directions (0.5, 0.4); 1e-4
# and 1e-5 leave too few to write the edit (reliability 0.5, 0.0).
NULL_SPACE_CUTOFF = 1e-3
# Subjects per edit whose keys are preserved exactly besides C's null space: those with the edit's old answer first
# (its `target_true`), then others asked the same question. 0, off: 16 did not help on val (module docstring);
# `scripts/sweep_parametric.py --method alphaedit --memory-subjects N` tries it on a train file.
NEIGHBOUR_SUBJECTS = 0
# At most this many neighbour keys per application, shared by its edits (100 edits: 2 each): each removes a
# direction from the null space the edits are written in (at the default cut-off 1,825 of 2,048 directions at
# Gemma-3-270M's layer 12).
MAX_NEIGHBOUR_KEYS = 256
KEY_PRECISION = 1e-6  # float32's, relative to the largest key's norm: smaller singular values are rounding noise
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
    k = keys.double()
    basis, sizes, _ = torch.linalg.svd(projection @ k, full_matrices=False)  # (d, m), (m,)
    # a key (nearly) outside P's range adds nothing: below float32's precision of the keys it is rounding noise
    q = basis[:, sizes > KEY_PRECISION * float(k.norm(dim=0).max())]
    return projection - q @ q.T


def keys_at_subjects(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, modules: Sequence[nn.Module],
                     prompts: Sequence[tuple[str, str]], batch: int = 32) -> list[torch.Tensor]:
    """Each module's input at each (prompt, subject)'s subject token, [(d_in, m)] in the modules' order, from one
    forward pass per `batch` prompts."""
    found: list[list[torch.Tensor]] = [[] for _ in modules]
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        rows = build_batch(tokenizer, [p for p, _ in chunk], [s for _, s in chunk])
        with torch.no_grad(), recording_each(modules) as seen:
            forward(model, rows)
        for keys, record in zip(found, seen, strict=True):
            assert record.input is not None, "the module did not run"
            keys.append(at_positions(record.input, rows.subject_last))  # (chunk, d_in)
    return [torch.cat(keys).T for keys in found]


def neighbour_prompts(edits: Sequence[Edit], subjects: SubjectTable, n: int) -> list[tuple[str, str]]:
    """Each edit's prompt about up to n other subjects (fewer in a large batch: MAX_NEIGHBOUR_KEYS in all), those
    with its old answer first, with their subject. No edit's own subject is another's neighbour: its key must move."""
    per_edit = min(n, MAX_NEIGHBOUR_KEYS // max(len(edits), 1))
    edited = {e.subject for e in edits}
    prompts = []
    for e in edits:  # drawn with room for the batch's subjects, which are then left out
        drawn = subjects.draw(e.prompt, e.subject, per_edit + len(edited) - 1, e.target_true, per_edit)
        prompts += [(e.prompt.replace(e.subject, s), s) for s in [s for s in drawn if s not in edited][:per_edit]]
    return prompts


def earlier_prompts(earlier: Sequence[Edit], edits: Sequence[Edit]) -> list[tuple[str, str]]:
    """The (prompt, subject) of each baked edit whose key a new update holds: all but those of a subject the new
    edits change (compared as supersession compares them)."""
    edited = {subject_key(e.subject) for e in edits}
    return [(e.prompt, e.subject) for e in earlier if subject_key(e.subject) not in edited]


def projected_update(
    projection: torch.Tensor, keys: torch.Tensor, wanted: torch.Tensor, ridge: float,
    held: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, V) with ΔW = R Vᵀ, V = (P (K_p K_pᵀ + K Kᵀ) + ridge I)⁻¹ P K; keys (d_in, n), wanted (d_out, n), held
    K_p (d_in, m): earlier edits' keys the update keeps small (None: none)."""
    k = keys.double()  # (d_in, n)
    moment = k @ k.T  # (d_in, d_in)
    if held is not None:
        h = held.double()  # (d_in, m)
        moment = moment + h @ h.T
    system = projection @ moment + ridge * torch.eye(k.shape[0], dtype=k.dtype)  # (d_in, d_in)
    return wanted, torch.linalg.solve(system, projection @ k).to(keys.dtype)  # (d_out, n), (d_in, n)


@dataclass(frozen=True)
class AlphaEdit:
    """MEMIT's edits and layers, each layer's update confined to the null space of its preserved keys."""

    name = "alphaedit"
    batched = True
    reads_earlier = True  # holds their keys
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
        layers = sorted(projections)
        modules = [context.model.get_submodule(context.arch.mlp_out.format(layer)) for layer in layers]
        neighbours = neighbour_prompts(edits, subjects, self.neighbour_subjects)
        if neighbours:  # read on the model as served, as the earlier keys are: close to what MEMIT's keys see
            for layer, keys in zip(layers, keys_at_subjects(context.model, context.tokenizer, modules, neighbours),
                                   strict=True):
                projections[layer] = without_directions(projections[layer], keys)
        held_prompts = earlier_prompts(context.earlier, edits)
        held = (dict(zip(layers, keys_at_subjects(context.model, context.tokenizer, modules, held_prompts),
                         strict=True)) if held_prompts else {})
        return (yield from memit(
            context.model, context.tokenizer, context.arch, edits, context.prompts,
            MemitOptions(context.layers, value_options(request)),
            lambda layer, keys, wanted: projected_update(projections[layer], keys, wanted, RIDGE, held.get(layer)),
        ))
