"""GRACE (Hartvigsen et al. 2023, "Aging with GRACE"): a codebook beside one MLP down-projection, one entry
per edit, that replaces the layer's output wherever its input falls within an entry's deferral radius.

    key    k = the down-projection's input at the edit prompt's last token                      (d_in,)
    value  v = W k + δ, δ optimised so that the model says the new answer once v replaces the output
           there (targets.py, as ROME's; on the prompt, after each context prefix and in other wordings)
    ε      the deferral radius: the request's share of ‖k‖ (relative, so one default fits any model's scale),
           then GRACE's rule for conflicts, applied to the entries in the order they were made: a new key
           within ε_new + ε_j of its nearest key j with another answer splits the two, ε = d/2 each; with the
           same answer both stay (GRACE widens j instead; one entry per edit keeps each edit's own entry)
    lookup at every position of every forward pass (the prompt's tokens and each generated one): the output
           becomes the value of the nearest key when the input is within that key's radius (ties: the newer
           entry), and stays the module's own otherwise

EasyEdit's reference checks only the last position of each call (its `replace_last`), told where a
teacher-forced prompt ends by the labels; the server's scoring calls carry no such marker, so every position
is checked: for generation that is the same positions plus the prompt's earlier tokens, which lie far from a
key taken at a question's last token.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import InvalidArgument
from server.models.arch import ArchTemplate
from server.parametric.additions import Act, Addition
from server.parametric.layers import LayerDefaults
from server.parametric.method import MethodContext, MethodRequest, one_at_a_time, value_options
from server.parametric.prompts import EditPrompts, PromptBatch, build_batch
from server.parametric.targets import Progress, ValueOptions, module_io, optimise_output_change
from server.types import Edit

KIND = "grace"
# ε as a share of the key's norm. On Gemma-3-270M at layer 12 (counterfact/train.json cases 0-49, never val or
# dev), a neighbourhood prompt's key (another subject, the same relation) lies 0.03 / 0.32 / 0.56 of ‖k‖ away at
# its minimum / 10th percentile / median, a paraphrase's 0.39 / 0.75 / 1.04 at its 10th / 50th / 90th: no radius
# reaches paraphrases without reaching neighbours first, so the default keeps locality (GRACE's trade-off).
DEFERRAL_RADIUS = 0.1
MAX_DEFERRAL_RADIUS = 10.0
# The matmul's screen (`_close`) keeps a pair unless its squared distance exceeds the limit by this share of
# ‖q‖² + ‖k‖²: the rounding of its float32 sums and of `_distances`' is at most about 4·d·2⁻²⁴ of that (measured:
# 1e-6 and 6e-5), so the screen never drops a pair the exact distance would keep.
MIN_MATMUL_SLACK = 1e-3


def matmul_slack(d: int) -> float:
    """The screen's slack for rows of d dimensions: 1e-3 up to about 2,000 (Gemma-3-270M's 2,048), 8·d·2⁻²⁴ above."""
    return max(MIN_MATMUL_SLACK, 8 * d * 2**-24)


def deferral_radii(keys: torch.Tensor, initial: torch.Tensor, labels: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """ε per entry after GRACE's conflict rule, applied in order; keys (n, d_in), initial (n,) → (n,) float32.

    Radii only shrink, so the rule's step for an entry with no earlier key within the two initial radii (`_close`)
    changes nothing: only the other steps measure distances exactly. The codebook is rebuilt at every step of a
    sequential application, so this matters."""
    radii = initial.float().clone()
    reach = radii[:, None] + radii[None, :]  # (n, n) the most ε_i + ε_j can be
    earlier = torch.ones(len(radii), len(radii), dtype=torch.bool, device=keys.device).tril(-1)  # (n, n) j < i
    for i in torch.nonzero((_close(keys, keys, reach) & earlier).any(-1))[:, 0].tolist():
        d, nearest = _distances(keys[i : i + 1], keys[:i])[0].min(0)
        j = int(nearest)
        if d <= radii[i] + radii[j] and labels[i] != labels[j]:
            radii[j] = torch.minimum(radii[j], d / 2)
            radii[i] = torch.minimum(radii[i], d / 2)
    return radii


def lookup(queries: torch.Tensor, keys: torch.Tensor, radii: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nearest entry (m,), within its radius (m,)) for queries (m, d_in); ties go to the newer entry. The nearest
    entry is meaningful where the query is within its radius.

    Every position of every forward pass is looked up, and nearly all lie far outside every radius: a matmul
    (`_close`) rules those out, and only the rest are measured exactly (`_distances`, 8 times the matmul's time for
    a thousand entries), so the decisions are the exact distances' at about a matmul's cost."""
    nearest = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
    hit = torch.zeros(len(queries), dtype=torch.bool, device=queries.device)
    near = torch.nonzero(_close(queries, keys, radii.float()[None, :]).any(-1))[:, 0]  # (m',)
    if len(near):
        smallest, from_end = _distances(queries[near], keys).flip(-1).min(-1)  # (m',)
        nearest[near] = len(keys) - 1 - from_end
        hit[near] = smallest <= radii[nearest[near]]
    return nearest, hit


def _close(a: torch.Tensor, b: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
    """(m, n) whether rows a (m, d) and b (n, d) may lie within `limits` (broadcast to (m, n)) of each other: their
    squared distances from a matmul, less a slack far above its rounding and `_distances`' (`matmul_slack`)."""
    a, b = a.float(), b.float()
    aa, bb = (a * a).sum(-1)[:, None], (b * b).sum(-1)[None, :]  # (m, 1), (1, n)
    kept = (1 - matmul_slack(a.shape[-1])) * (aa + bb) - limits**2  # (m, n)
    return torch.addmm(kept, a, b.T, alpha=-2) <= 0


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (m, n) between rows, in float32, without the matmul shortcut: exact and the same
    whatever the batch, so a replayed codebook decides as the original did."""
    return torch.cdist(a.float(), b.float(), compute_mode="donot_use_mm_for_euclid_dist")


@dataclass(frozen=True)
class Codebook:
    """One module's GRACE entries, in the order they were made."""

    edit_ids: tuple[str, ...]
    keys: torch.Tensor  # (n, d_in)
    values: torch.Tensor  # (n, d_out)
    radii: torch.Tensor  # (n,) float32, after the conflict rule

    @staticmethod
    def build(additions: Sequence[Addition]) -> Codebook:
        keys = torch.stack([a.tensors["key"] for a in additions])
        labels = [tuple(a.tensors["label"].tolist()) for a in additions]
        initial = torch.cat([a.tensors["radius"] for a in additions])
        return Codebook(tuple(a.edit_id for a in additions), keys,
                        torch.stack([a.tensors["value"] for a in additions]), deferral_radii(keys, initial, labels))

    def forward(self, inputs: torch.Tensor, output: torch.Tensor) -> tuple[torch.Tensor, list[Act]]:
        """output (batch, seq, d_out) with the values of the entries its inputs (batch, seq, d_in) fall within,
        and where each entry acted."""
        nearest, hit = lookup(inputs.reshape(-1, inputs.shape[-1]), self.keys, self.radii)  # (batch · seq,)
        if not bool(hit.any()):
            return output, []
        flat = output.reshape(-1, output.shape[-1])
        replaced = torch.where(hit[:, None], self.values[nearest].to(flat.dtype), flat)
        seq = inputs.shape[1]
        acts = [Act(i // seq, i % seq, self.edit_ids[entry])
                for i, entry in zip(hit.nonzero()[:, 0].tolist(), nearest[hit].tolist(), strict=True)]
        return replaced.reshape(output.shape), acts


def at_last_prompt_token(batch: PromptBatch) -> PromptBatch:
    """The batch with its edit position moved from the subject's last token to each prompt's last token."""
    return replace(batch, subject_last=batch.attention_mask.sum(dim=1) - 1 - batch.answer_ids.shape[0])


def grace_entry(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    arch: ArchTemplate,
    edit: Edit,
    layer: int,
    prompts: EditPrompts,
    options: ValueOptions,
    radius: float,
) -> Generator[Progress, None, Addition]:
    """The codebook entry that writes `edit` at layer `layer`; yields progress between steps."""
    name = arch.mlp_out.format(layer)
    module = model.get_submodule(name)
    plain = at_last_prompt_token(build_batch(tokenizer, [edit.prompt], edit.subject))
    key, output = (x[0] for x in module_io(model, module, plain))  # (d_in,), (d_out,)
    change = yield from optimise_output_change(
        model, module,
        rewrite=at_last_prompt_token(build_batch(tokenizer, prompts.value, edit.subject, edit.target_new)),
        kl=plain,  # unused (kl_factor 0): the entry acts only near its own key, not on other prompts
        # No continuation term either: an entry's edited prompt was already as fluent as the unedited model's
        # (4.55 bits, docs/BENCHMARKS.md), and the term doubles the time per edit.
        options=replace(options, kl_factor=0.0, continuation_tokens=0), edit_id=edit.id,
    )  # (d_out,)
    label = build_batch(tokenizer, [edit.prompt], edit.subject, edit.target_new).answer_ids  # (t,)
    tensors = {"key": key, "value": output + change, "radius": (radius * key.float().norm()).reshape(1),
               "label": label}
    return Addition(edit.id, name, KIND, tensors)


class Grace:
    """One entry per edit at one layer, each computed with the earlier entries attached."""

    name = KIND
    batched = False
    reads_earlier = False

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        # ROME's layer: measured on Gemma-3-270M as where one MLP can write a fact's answer (12 of 18, about the
        # depth GRACE's paper edits GPT2-XL at, 35 of 48); a third of the way up elsewhere.
        return (defaults.rome if request.layer is None else request.layer,)

    def check(self, request: MethodRequest) -> None:
        radius = request.deferral_radius
        # A negated range test, so that NaN is refused too.
        if radius is not None and not 0.0 < radius <= MAX_DEFERRAL_RADIUS:
            raise InvalidArgument(
                f"options.deferral_radius must be a share of the key's norm in (0, {MAX_DEFERRAL_RADIUS:g}], "
                f"got {radius}"
            )

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[Addition]]:
        (layer,) = context.layers
        options = value_options(request)
        radius = DEFERRAL_RADIUS if request.deferral_radius is None else request.deferral_radius
        return (yield from one_at_a_time(context, edits, lambda edit: grace_entry(
            context.model, context.tokenizer, context.arch, edit, layer, context.prompts[edit.id], options, radius,
        )))
