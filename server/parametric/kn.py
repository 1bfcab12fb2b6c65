"""KN, knowledge neurons (Dai et al. 2022): find the FFN neurons that express a fact, then move their value vectors
from the old answer's embedding toward the new one.

    attribution  a_i = x_i · (1/m) Σ_{k=1..m} ∂p(answer | α_k x)/∂x_i with α_k = k/m: integrated gradients as a
                 Riemann sum over the intermediate neurons x (the down-projection's input, d_ff per layer) at the
                 prompt's last token, the old answer's first token the target; the m steps run as one batch
    neurons      those whose attribution exceeds `threshold` × the prompt's largest in at least `prompt_share` of the
                 edit's prompts (paper: 0.2 and 70%), at most `max_neurons` of them by mean attribution
    update       w_i ← w_i − λ1·E[old] + λ2·E[new] for each such neuron's value vector w_i, column i of the
                 down-projection (paper's "update": λ1 = 1, λ2 = 8)

Two choices the paper (BERT, an ungated GELU MLP, λ in embedding units) did not have to make:
- E is the answer token's row of the output embedding, rescaled to the layer's mean value-vector norm, so λ reads the
  same on every model (a raw embedding row and a value vector of one model can differ in norm by orders of magnitude).
- A gated MLP's neuron can be negative at the prompt: the change is multiplied by the sign of the neuron's mean
  activation over the prompts, so it pushes toward the new answer when the neuron fires as it does there.
Each neuron's change is one rank-one `WeightDelta` (u = the change (d_model,), v = one-hot (d_ff,)), so the ledger,
replay and rollback treat it like ROME's.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from copy import deepcopy
from dataclasses import dataclass

import torch
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from server.errors import InvalidArgument
from server.models.arch import ArchTemplate
from server.parametric.deltas import WeightDelta, weight_out_in
from server.parametric.layers import LayerDefaults
from server.parametric.method import MethodContext, MethodRequest, on_current
from server.parametric.prompts import EditPrompts, answer_token_ids
from server.parametric.tap import recording_each, replacing_input
from server.parametric.targets import Progress
from server.types import Edit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnOptions:
    steps: int = 20  # m, the Riemann sum's steps (paper: 20)
    threshold: float = 0.2  # share of a prompt's largest attribution a neuron must exceed there (paper: 0.2)
    prompt_share: float = 0.7  # share of the prompts it must exceed it in (paper: 70%)
    max_neurons: int = 10  # the most neurons one edit changes, by mean attribution
    max_prompts: int = 5  # the edit's prompt and up to this many less one others (the cost on 2 cores, BENCHMARKS)
    erase: float = 1.0  # λ1, in units of the layer's mean value-vector norm
    enhance: float = 8.0  # λ2, likewise


@dataclass(frozen=True)
class PromptAttribution:
    """A prompt's attributions over the layers asked for, and what they were computed from."""

    layers: tuple[int, ...]
    scores: torch.Tensor  # (L, d_ff) integrated gradients, in units of probability
    activations: torch.Tensor  # (L, d_ff) the neurons at the prompt's last token
    probability: float  # p(answer token) after the prompt


@dataclass(frozen=True)
class NeuronScore:
    neuron: int  # index among the layer's d_ff neurons
    attribution: float
    activation: float


@dataclass(frozen=True)
class LayerNeurons:
    layer: int
    module: str  # the down-projection whose inputs the neurons are
    neurons: tuple[NeuronScore, ...]  # highest attribution first


@dataclass(frozen=True)
class AttributionReport:
    """What `editctl attribute` shows: the strongest neurons per layer for an answer after a prompt."""

    answer_token: str
    probability: float
    layers: tuple[LayerNeurons, ...]


# --- the maths -----------------------------------------------------------------------------


def riemann_scales(activation: torch.Tensor, steps: int) -> torch.Tensor:
    """α_k x for α_k = k/m, k = 1..m: activation (d_ff,) → (m, d_ff)."""
    alphas = torch.arange(1, steps + 1, dtype=activation.dtype, device=activation.device) / steps  # (m,)
    return alphas[:, None] * activation[None, :]


def integrated_gradients(activation: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """x_i times the mean over the m steps of ∂p/∂x_i: activation (d_ff,), gradients (m, d_ff) → (d_ff,)."""
    return activation * gradients.mean(dim=0)


def knowledge_neurons(
    scores: torch.Tensor, threshold: float, prompt_share: float, max_neurons: int
) -> list[tuple[int, int]]:
    """(layer index, neuron) pairs above `threshold` × each prompt's largest score in at least `prompt_share` of the
    prompts, the highest mean score first; scores (P, L, d_ff). Empty when no neuron is shared enough."""
    prompts, layers, width = scores.shape
    largest = scores.reshape(prompts, -1).max(dim=1).values  # (P,)
    above = scores > threshold * largest[:, None, None]  # (P, L, d_ff)
    kept = above.float().mean(dim=0) >= prompt_share  # (L, d_ff)
    candidates = kept.reshape(-1).nonzero()[:, 0]  # flat indices, (c,)
    order = scores.mean(dim=0).reshape(-1)[candidates].argsort(descending=True)[:max_neurons]
    return [(int(i) // width, int(i) % width) for i in candidates[order]]


def value_change(
    old: torch.Tensor | None, new: torch.Tensor, scale: float, erase: float, enhance: float
) -> torch.Tensor:
    """−λ1·Ê[old] + λ2·Ê[new] with Ê = E / ‖E‖ · scale; old, new (d_model,) → (d_model,). No old answer: λ2·Ê[new]."""
    change = enhance * scale * new / new.norm()
    return change if old is None else change - erase * scale * old / old.norm()


def one_hot(index: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """e_index, (size,), in `like`'s dtype and device."""
    basis = torch.zeros(size, dtype=like.dtype, device=like.device)
    basis[index] = 1.0
    return basis


# --- on the model ----------------------------------------------------------------------------


def last_activations(
    model: PreTrainedModel, arch: ArchTemplate, input_ids: torch.Tensor, layers: Sequence[int], target: int
) -> tuple[torch.Tensor, float]:
    """The down-projections' inputs at the last token, (L, d_ff), and p(target) there; input_ids (1, t)."""
    modules = [model.get_submodule(arch.mlp_out.format(layer)) for layer in layers]
    with torch.no_grad(), recording_each(modules) as seen:
        logits = model(input_ids=input_ids, logits_to_keep=1).logits[0, -1]  # (vocab,)
    inputs = []
    for layer, found in zip(layers, seen, strict=True):
        if found.input is None:
            raise RuntimeError(f"layer {layer}'s down-projection did not run")
        inputs.append(found.input[0, -1])  # (d_ff,)
    return torch.stack(inputs), float(torch.softmax(logits.float(), dim=-1)[target])


def prefix_cache(model: PreTrainedModel, input_ids: torch.Tensor) -> Cache | None:
    """The keys and values of every token but the last; input_ids (1, t).

    Scaling a neuron at the last token changes nothing before it, so the m scaled copies of a prompt share this
    prefix and only run their last token: m tokens a layer instead of m·t.
    """
    if input_ids.shape[1] < 2:
        return None
    with torch.no_grad():
        return model(input_ids=input_ids[:, :-1], use_cache=True).past_key_values  # type: ignore[no-any-return]


def repeated(prefix: Cache | None, rows: int) -> Cache | None:
    """A copy of the prefix's cache for `rows` rows (a forward pass appends to the cache it is given)."""
    if prefix is None:
        return None
    copy = deepcopy(prefix)
    copy.batch_repeat_interleave(rows)
    return copy


def layer_attribution(
    model: PreTrainedModel, arch: ArchTemplate, input_ids: torch.Tensor, prefix: Cache | None, layer: int,
    activation: torch.Tensor, target: int, steps: int,
) -> torch.Tensor:
    """Integrated gradients of p(target) over one layer's neurons at the last token; input_ids (1, t), `prefix` the
    other tokens' cache (`prefix_cache`), activation (d_ff,) → (d_ff,)."""
    scaled = riemann_scales(activation, steps).detach().requires_grad_(True)  # (m, d_ff)
    last = input_ids[:, -1:].expand(steps, 1)  # (m, 1)
    at = torch.zeros(steps, dtype=torch.long, device=last.device)  # (m,) the one position each row runs
    module = model.get_submodule(arch.mlp_out.format(layer))
    cache = repeated(prefix, steps)
    with torch.enable_grad(), replacing_input(module, at, scaled):
        logits = model(input_ids=last, past_key_values=cache, use_cache=cache is not None).logits[:, -1]  # (m, vocab)
        probability = torch.softmax(logits.float(), dim=-1)[:, target]  # (m,)
        (gradients,) = torch.autograd.grad(probability.sum(), scaled)  # (m, d_ff); rows are independent
    return integrated_gradients(activation, gradients.to(activation.dtype))


def attribute(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, arch: ArchTemplate, prompt: str, target: int,
    layers: Sequence[int], steps: int, edit_id: str | None = None,
) -> Generator[Progress, None, PromptAttribution]:
    """The prompt's attribution of p(target token) over each layer's neurons, one layer per step."""
    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)  # (1, t)
    activations, probability = last_activations(model, arch, input_ids, layers, target)  # (L, d_ff)
    prefix = prefix_cache(model, input_ids)
    scores = []
    for done, layer in enumerate(layers):
        scores.append(layer_attribution(model, arch, input_ids, prefix, layer, activations[done], target, steps))
        yield Progress("attribution", done + 1, len(layers), None, edit_id)
    return PromptAttribution(tuple(layers), torch.stack(scores), activations, probability)


def attributed_prompts(prompts: EditPrompts, count: int) -> tuple[str, ...]:
    """The edit's prompt, then its other wordings (the paper's paraphrases), then it after context prefixes."""
    bare, *prefixed = prompts.key  # prefixes.py puts the empty prefix first
    others = prompts.value[len(prompts.key):]
    return (bare, *others, *prefixed)[:count]


def top_neurons(found: PromptAttribution, arch: ArchTemplate, top: int) -> tuple[LayerNeurons, ...]:
    """Each layer's `top` neurons by attribution, highest first."""
    layers = []
    for index, layer in enumerate(found.layers):
        scores = found.scores[index]  # (d_ff,)
        best = scores.topk(min(top, scores.shape[0])).indices
        layers.append(LayerNeurons(layer, arch.mlp_out.format(layer), tuple(
            NeuronScore(int(i), float(scores[i]), float(found.activations[index, i])) for i in best
        )))
    return tuple(layers)


def greedy_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> int:
    """The model's own next token after the prompt (the old answer when an edit does not name one)."""
    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
    with torch.no_grad():
        return int(model(input_ids=input_ids, logits_to_keep=1).logits[0, -1].argmax())


def kn(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, arch: ArchTemplate, edit: Edit,
    layers: Sequence[int], prompts: Sequence[str], options: KnOptions,
) -> Generator[Progress, None, list[WeightDelta]]:
    """One rank-one delta per knowledge neuron of the edit's old fact, moving its value to the new answer."""
    new = answer_token_ids(tokenizer, edit.target_new)[0]
    old = (answer_token_ids(tokenizer, edit.target_true)[0] if edit.target_true
           else greedy_token(model, tokenizer, edit.prompt))
    found = []
    for prompt in prompts:
        found.append((yield from attribute(model, tokenizer, arch, prompt, old, layers, options.steps, edit.id)))
    scores = torch.stack([f.scores for f in found])  # (P, L, d_ff)
    signs = torch.stack([f.activations for f in found]).mean(dim=0).sign()  # (L, d_ff)
    neurons = knowledge_neurons(scores, options.threshold, options.prompt_share, options.max_neurons)
    if not neurons:  # the paper's thresholds can leave none on a prompt set this small: keep the strongest
        neurons = knowledge_neurons(scores, options.threshold, 0.0, 1)
        log.info("edit %s: no neuron above the threshold in %.0f%% of %d prompts; changing the strongest one",
                 edit.id, 100 * options.prompt_share, len(prompts))
    embeddings: torch.Tensor = model.get_submodule(arch.lm_head).weight  # type: ignore[assignment]  # (vocab, d_model)
    deltas = []
    for index, neuron in neurons:
        name = arch.mlp_out.format(layers[index])
        weight = weight_out_in(model, name, arch)  # (d_model, d_ff): column i is neuron i's value vector
        with torch.no_grad():
            scale = float(weight.norm(dim=0).mean())
            change = value_change(None if old == new else embeddings[old].float(), embeddings[new].float(), scale,
                                  options.erase, options.enhance)  # (d_model,)
            change = (change * signs[index, neuron]).to(weight.dtype)
        deltas.append(WeightDelta(edit.id, name, change, one_hot(neuron, weight.shape[1], change)))
    return deltas


class Kn:
    """One edit at a time, each attributed on the model with the earlier ones in place, over several layers."""

    name = "kn"
    batched = False
    reads_earlier = False

    def edited_layers(self, request: MethodRequest, defaults: LayerDefaults) -> tuple[int, ...]:
        return request.layers or (defaults.kn if request.layer is None else (request.layer,))

    def check(self, request: MethodRequest) -> None:
        if request.steps is not None and request.steps > 200:
            raise InvalidArgument(f"options.steps is KN's Riemann steps, at most 200; got {request.steps}")

    def compute(
        self, context: MethodContext, request: MethodRequest, edits: Sequence[Edit]
    ) -> Generator[Progress, None, list[WeightDelta]]:
        options = KnOptions() if request.steps is None else KnOptions(steps=request.steps)
        deltas: list[WeightDelta] = []
        for edit in edits:  # several deltas per edit, so not `one_at_a_time`
            deltas += yield from on_current(context, kn(
                context.model, context.tokenizer, context.arch, edit, context.layers,
                attributed_prompts(context.prompts[edit.id], options.max_prompts), options,
            ), deltas)
        return deltas
