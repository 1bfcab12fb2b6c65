"""KN (knowledge neurons): the attribution and selection maths, and the method through the ParametricEditor on tiny
models that first learn four facts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from server.errors import InvalidArgument
from server.models.arch import arch_for
from server.parametric.deltas import WeightDelta
from server.parametric.editor import MethodRequest
from server.parametric.kn import (
    attribute,
    integrated_gradients,
    knowledge_neurons,
    riemann_scales,
    value_change,
)
from server.parametric.tap import replacing_input
from server.parametric.targets import finish
from server.types import Edit
from tests.unit.test_parametric_editor import answer, assert_same, make_editor, nll, weights

PROMPT = "the capital of france is"


def france(target_true: str | None = "paris") -> Edit:
    return Edit("e1", "ns", "france is", PROMPT, "berlin", target_true, (), 0.0)


def taught(model_type: str, tmp_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    _, model, tokenizer = make_editor(model_type, tmp_path)
    return cast(PreTrainedModel, model), cast(PreTrainedTokenizerBase, tokenizer)


def token(tokenizer: object, word: str) -> int:
    return int(tokenizer.convert_tokens_to_ids(word))  # type: ignore[attr-defined]


def probability_with(model: torch.nn.Module, tokenizer: object, layer: int, values: torch.Tensor, word: str) -> float:
    """p(word) after PROMPT with layer's down-projection input at the last token replaced by `values` (d_ff,)."""
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]  # type: ignore[operator]
    module = model.get_submodule(arch_for(model.config).mlp_out.format(layer))  # type: ignore[arg-type]
    with torch.no_grad(), replacing_input(module, torch.tensor([ids.shape[1] - 1]), values[None]):
        logits = model(input_ids=ids).logits[0, -1]
    return float(torch.softmax(logits, dim=-1)[token(tokenizer, word)])


def test_riemann_steps_scale_the_activation_from_one_step_up_to_itself() -> None:
    x = torch.tensor([2.0, -4.0])
    assert torch.equal(riemann_scales(x, 4), torch.tensor([[0.5, -1.0], [1.0, -2.0], [1.5, -3.0], [2.0, -4.0]]))
    assert torch.equal(integrated_gradients(x, torch.tensor([[1.0, 0.0], [3.0, 1.0]])), torch.tensor([4.0, -2.0]))


def test_neurons_are_kept_when_above_the_threshold_in_enough_prompts_strongest_first() -> None:
    scores = torch.zeros(4, 2, 3)  # (prompts, layers, d_ff)
    scores[:, 0, 0] = 1.0  # the largest in every prompt
    scores[:3, 1, 2] = 0.5  # above 0.2 of it in three prompts of four
    scores[:2, 0, 1] = 0.9  # in two of four only
    scores[3, 1, 1] = 0.3  # in one
    assert knowledge_neurons(scores, threshold=0.2, prompt_share=0.7, max_neurons=10) == [(0, 0), (1, 2)]
    assert knowledge_neurons(scores, threshold=0.2, prompt_share=0.5, max_neurons=10) == [(0, 0), (0, 1), (1, 2)]
    assert knowledge_neurons(scores, threshold=0.2, prompt_share=0.5, max_neurons=1) == [(0, 0)]
    assert knowledge_neurons(scores, threshold=0.95, prompt_share=0.7, max_neurons=10) == [(0, 0)]


def test_the_value_change_moves_from_the_old_embedding_to_the_new_at_the_layers_scale() -> None:
    old, new = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 0.5])
    assert torch.allclose(value_change(old, new, scale=2.0, erase=1.0, enhance=8.0), torch.tensor([-2.0, 16.0]))
    assert torch.allclose(value_change(None, new, scale=2.0, erase=1.0, enhance=8.0), torch.tensor([0.0, 16.0]))


def test_integrated_gradients_add_up_to_the_probability_the_layer_gives(tmp_path: Path) -> None:
    # Completeness (Sundararajan et al. 2017): Σ_i attribution_i = p(x) − p(0) as the steps grow, here for each layer.
    model, tokenizer = taught("llama", tmp_path)
    arch = arch_for(model.config)
    paris = token(tokenizer, "paris")
    found = finish(attribute(model, tokenizer, arch, PROMPT, paris, (0, 1, 2, 3), steps=200))
    for index, layer in enumerate(found.layers):
        zeroed = probability_with(model, tokenizer, layer, torch.zeros_like(found.activations[index]), "paris")
        assert float(found.scores[index].sum()) == pytest.approx(found.probability - zeroed, abs=0.02)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_the_attributed_neurons_carry_the_fact_more_than_random_ones(model_type: str, tmp_path: Path) -> None:
    # The taught model is sure of "paris" (p > 0.99), so ablations are compared in log-probability.
    model, tokenizer = taught(model_type, tmp_path)
    found = finish(attribute(model, tokenizer, arch_for(model.config), PROMPT, token(tokenizer, "paris"),
                             (0, 1, 2, 3), steps=20))
    generator = torch.Generator().manual_seed(0)

    def logp_without(layer: int, activation: torch.Tensor, neurons: torch.Tensor) -> float:
        return math.log(probability_with(model, tokenizer, layer, activation.index_fill(0, neurons, 0.0), "paris"))

    for index, layer in enumerate(found.layers):
        activation = found.activations[index]  # (d_ff,)
        randoms = [logp_without(layer, activation, torch.randperm(activation.shape[0], generator=generator)[:4])
                   for _ in range(20)]
        assert logp_without(layer, activation, found.scores[index].topk(4).indices) < min(randoms), f"layer {layer}"


def test_kn_moves_the_answer_and_rolls_back_to_the_exact_weights(tmp_path: Path) -> None:
    editor, model, tokenizer = make_editor("llama", tmp_path)
    original = weights(model)
    assert answer(model, tokenizer, PROMPT) == "paris"
    request = MethodRequest("kn", layers=(0, 1, 2, 3))
    deltas = finish(editor.compute(request, [france()]))
    assert_same(weights(model), original)  # compute leaves the model as it found it
    assert deltas and all(isinstance(d, WeightDelta) and d.v is not None for d in deltas)
    for delta in deltas:  # one neuron's value vector each: v is one-hot, u a column of the down-projection
        assert isinstance(delta, WeightDelta) and delta.v is not None
        assert int((delta.v != 0).sum()) == 1 and float(delta.v.max()) == 1.0
        assert delta.u.shape == (cast(PreTrainedModel, model).config.hidden_size,)
    editor.commit("ns", request, deltas)
    assert answer(model, tokenizer, PROMPT) == "berlin"
    changed = [k for k in original if not torch.equal(original[k], model.state_dict()[k])]
    assert changed and all(k.endswith("mlp.down_proj.weight") for k in changed)
    edited = weights(model)

    editor.close()
    replayed, model2, _ = make_editor("llama", tmp_path)
    assert replayed.replay() == len(deltas)
    assert_same(weights(model2), edited)
    baked = replayed.baked("ns", "e1")
    assert baked is not None and baked.method == "kn"
    replayed.rollback("ns", "e1")
    assert_same(weights(model2), original)


def test_kn_on_gemma_3_lowers_the_new_answers_loss(tmp_path: Path) -> None:
    # Gemma 3 normalises each MLP's output, which bounds what a few columns can add (as for ROME's test).
    editor, model, tokenizer = make_editor("gemma3_text", tmp_path)
    before = nll(model, tokenizer, PROMPT, "berlin")
    request = MethodRequest("kn", layers=(0, 1, 2, 3))
    editor.commit("ns", request, finish(editor.compute(request, [france()])))
    assert nll(model, tokenizer, PROMPT, "berlin") < before - 2.0


def test_without_a_true_answer_kn_attributes_the_models_own_answer(tmp_path: Path) -> None:
    editor, _, _ = make_editor("llama", tmp_path)
    request = MethodRequest("kn", layers=(0, 1, 2, 3))
    named = finish(editor.compute(request, [france("paris")]))
    greedy = finish(editor.compute(request, [france(None)]))  # the model says "paris" itself
    assert named and len(named) == len(greedy)
    for a, b in zip(named, greedy, strict=True):
        assert isinstance(a, WeightDelta) and isinstance(b, WeightDelta) and a.module == b.module
        assert a.v is not None and b.v is not None and torch.equal(a.v, b.v) and torch.equal(a.u, b.u)


def test_too_many_riemann_steps_are_refused_before_any_work(tmp_path: Path) -> None:
    editor, _, _ = make_editor("llama", tmp_path)
    with pytest.raises(InvalidArgument, match="steps"):
        finish(editor.compute(MethodRequest("kn", steps=500), [france()]))
