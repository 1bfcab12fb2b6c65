"""MEND and KE on tiny models that first learn four facts: the gradient's factors, KE's update against its dense form, a
briefly trained editor network of each kind, and the editor's ledger (rollback and replay exactness), and the error
when no trained editor matches the model."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel

from client.convert import METHOD_VALUES
from client.editctl import build_parser
from client.evaluation.runner import PARAMETRIC_METHODS
from editcache.v1 import parametric_pb2 as parametric_pb
from server.errors import FailedPrecondition, InvalidArgument
from server.models.arch import arch_for
from server.parametric import registry
from server.parametric.editor import MethodRequest, ParametricEditor, ParametricSettings
from server.parametric.ke import Ke, KnowledgeEditor
from server.parametric.ledger import Ledger
from server.parametric.mend import (
    EditorNetwork,
    GradientEditor,
    Mend,
    MendConfig,
    TrainingExample,
    answer_logits,
    answer_loss,
    find_artifact,
    gradient_factors,
    gradient_from_factors,
    load_artifact,
    read_edit,
    save_artifact,
    token_batch,
    training_losses,
)
from server.parametric.targets import finish
from server.servicers.convert import method_from_pb, method_to_pb
from server.types import Edit
from tests.tiny import build_tiny_model, build_tiny_tokenizer, teach

COUNTRIES = {"france": "paris", "germany": "berlin", "italy": "rome", "spain": "madrid"}
LAYERS = 4
NETWORKS: dict[str, tuple[type[GradientEditor], type[Mend], float]] = {  # network, method, the config's edit_lr
    "mend": (EditorNetwork, Mend, 1e-2), "ke": (KnowledgeEditor, Ke, 1.0)}


@functools.cache
def taught_weights(model_type: str) -> dict[str, torch.Tensor]:
    return teach(build_tiny_model(model_type, layers=LAYERS), build_tiny_tokenizer()).state_dict()


def taught(model_type: str) -> PreTrainedModel:
    model = build_tiny_model(model_type, layers=LAYERS)
    model.load_state_dict(taught_weights(model_type))
    model.eval().requires_grad_(False)
    return model


def prompt(country: str) -> str:
    return f"the capital of {country} is"


def answer(model: torch.nn.Module, tokenizer: object, text: str) -> str:
    ids = tokenizer(text, return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        return str(tokenizer.convert_ids_to_tokens(int(model(**ids).logits[0, -1].argmax())))  # type: ignore[attr-defined]


def config_for(model: PreTrainedModel, fingerprint: str, family: str = "mend", rank: int = 8) -> MendConfig:
    arch = arch_for(model.config)
    layers = tuple(range(1, LAYERS))  # the last three, as Mend.edited_layers chooses
    weight: torch.Tensor = model.get_submodule(arch.mlp_out.format(1)).weight  # type: ignore[assignment]
    d_out, d_in = weight.shape if arch.out_features_first else weight.shape[::-1]
    return MendConfig(fingerprint, str(model.config.model_type), tuple(arch.mlp_out.format(i) for i in layers),
                      layers, int(d_in), int(d_out), rank, edit_lr=NETWORKS[family][2], family=family)


def network_for(model: PreTrainedModel, fingerprint: str, family: str) -> GradientEditor:
    return NETWORKS[family][0](config_for(model, fingerprint, family))


@functools.cache
def trained_editor(model_type: str, family: str = "mend") -> dict[str, torch.Tensor]:
    """An editor trained for a few seconds on every counterfactual capital of the four countries, with the other
    countries' facts held (the paper's objective, in miniature)."""
    model, tokenizer = taught(model_type), build_tiny_tokenizer()
    torch.manual_seed(0)
    network = network_for(model, f"tiny-{model_type}", family)
    pairs = [(c, t) for c, t in itertools.product(COUNTRIES, COUNTRIES.values()) if COUNTRIES[c] != t]
    examples = [TrainingExample(
        edit=token_batch(tokenizer, [(prompt(c), t)]), equivalent=token_batch(tokenizer, [(prompt(c), t)]),
        unrelated=token_batch(tokenizer, [(prompt(o), COUNTRIES[o]) for o in COUNTRIES if o != c]),
    ) for c, t in pairs]
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    for step in range(300):
        edit_loss, loc_loss = training_losses(model, arch_for(model.config), network, examples[step % len(examples)])
        optimiser.zero_grad()
        (edit_loss + loc_loss).backward()
        optimiser.step()
    return network.state_dict()


def make_editor(model_type: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fingerprint: str | None = None,
                family: str = "mend") -> tuple[ParametricEditor, PreTrainedModel, object]:
    """An editor over a freshly taught model whose ledger is in tmp_path; the method `family` reads artifacts from
    tmp_path/family, where its trained editor is saved as made for `fingerprint` (default: this model's)."""
    model, tokenizer = taught(model_type), build_tiny_tokenizer()
    root = tmp_path / family
    if not (root / "tiny").exists():
        network = network_for(model, fingerprint or f"tiny-{model_type}", family)
        network.load_state_dict(trained_editor(model_type, family))
        save_artifact(network, root / "tiny")
    monkeypatch.setitem(registry.METHODS, family, NETWORKS[family][1](root))
    settings = ParametricSettings(tmp_path / "cache", (), stats_tokens=100, model_samples=0, prefixes=0)
    ledger = Ledger(tmp_path / "parametric.sqlite", f"tiny-{model_type}")
    return ParametricEditor(model, tokenizer, arch_for(model.config), ledger, f"tiny-{model_type}", settings), \
        model, tokenizer


def edit(country: str, target: str, id_: str) -> Edit:
    return Edit(id_, "ns", country, prompt(country), target, None, (), 0.0)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


@pytest.mark.parametrize("model_type", ["gemma3_text", "gpt2"])  # nn.Linear (out, in) and Conv1D (in, out)
def test_the_gradient_is_the_sum_of_rank_one_factors_per_position(model_type: str) -> None:
    model, tokenizer = taught(model_type), build_tiny_tokenizer()
    arch = arch_for(model.config)
    modules = tuple(arch.mlp_out.format(i) for i in range(1, LAYERS))
    batch = token_batch(tokenizer, [(prompt("france"), "berlin"), ("the capital of italy", "is madrid")])
    for name in modules:
        model.get_submodule(name).weight.requires_grad_(True)
    answer_loss(answer_logits(model, batch), batch).backward()
    factors = gradient_factors(model, modules, batch, positions=batch.attention_mask.bool())
    read = gradient_factors(model, modules, batch)
    for name in modules:
        assert read[name][0].shape[0] == int(batch.attention_mask.sum()) - 2, "the editor skips each row's BOS"
        grad = model.get_submodule(name).weight.grad
        assert isinstance(grad, torch.Tensor)
        expected = grad if arch.out_features_first else grad.T  # (d_out, d_in)
        u, delta = factors[name]
        assert u.shape[0] == int(batch.attention_mask.sum()), "one factor pair per real token"
        assert float(expected.abs().max()) > 0, "the edit's loss must reach the layer"
        torch.testing.assert_close(gradient_from_factors(u, delta), expected, rtol=1e-4, atol=1e-7)


def test_an_untrained_editor_is_the_identity_on_standardised_factors() -> None:
    model = taught("gemma3_text")
    network = EditorNetwork(config_for(model, "x"))
    u, delta = torch.randn(5, network.config.d_in), torch.randn(5, network.config.d_out)
    network.observe(0, u, delta)
    u_new, delta_new = network(0, u, delta)
    z = torch.cat([u, delta], -1)
    standard = (z - z.mean(0)) / z.std(0)
    torch.testing.assert_close(torch.cat([u_new, delta_new], -1), standard, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", NETWORKS)
def test_a_briefly_trained_editor_changes_the_edited_answer_and_keeps_the_others(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor, model, tokenizer = make_editor("gemma3_text", tmp_path, monkeypatch, family=family)
    assert answer(model, tokenizer, prompt("france")) == "paris"
    request = MethodRequest(family)
    deltas = finish(editor.compute(request, [edit("france", "madrid", "e1")]))
    assert answer(model, tokenizer, prompt("france")) == "paris", "compute must not change the weights"
    assert {d.module for d in deltas} == {f"model.layers.{i}.mlp.down_proj" for i in range(1, LAYERS)}
    editor.commit("ns", request, deltas)
    assert answer(model, tokenizer, prompt("france")) == "madrid"
    assert [answer(model, tokenizer, prompt(c)) for c in ("germany", "italy")] == ["berlin", "rome"]


@pytest.mark.parametrize("family", NETWORKS)
def test_rollback_restores_the_weights_exactly(family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    editor, model, _ = make_editor("gemma3_text", tmp_path, monkeypatch, family=family)
    original = weights(model)
    request = MethodRequest(family)
    editor.commit("ns", request, finish(editor.compute(request, [edit("france", "madrid", "e1")])))
    after_first = weights(model)
    editor.commit("ns", request, finish(editor.compute(request, [edit("italy", "berlin", "e2")])))
    assert not torch.equal(weights(model)["model.layers.3.mlp.down_proj.weight"], after_first[
        "model.layers.3.mlp.down_proj.weight"])
    editor.rollback("ns", "e2")
    assert_same(weights(model), after_first)
    editor.rollback("ns", "e1")
    assert_same(weights(model), original)


@pytest.mark.parametrize("family", NETWORKS)
def test_replay_after_a_restart_is_bit_identical(family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    editor, model, _ = make_editor("gemma3_text", tmp_path, monkeypatch, family=family)
    request = MethodRequest(family)
    written = 0
    for e in (edit("france", "madrid", "e1"), edit("spain", "rome", "e2")):
        deltas = finish(editor.compute(request, [e]))
        editor.commit("ns", request, deltas)
        written += len(deltas)
    edited = weights(model)
    editor.close()
    restarted, fresh, _ = make_editor("gemma3_text", tmp_path, monkeypatch, family=family)
    assert restarted.replay() == written
    assert_same(weights(fresh), edited)


def test_no_editor_trained_on_the_served_model_is_a_failed_precondition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor, model, _ = make_editor("gemma3_text", tmp_path, monkeypatch, fingerprint="another-model-0123456789ab")
    before = weights(model)
    with pytest.raises(FailedPrecondition, match="another-model-0123456789ab.*train_mend.py --method mend"):
        finish(editor.compute(MethodRequest("mend"), [edit("france", "madrid", "e1")]))
    monkeypatch.setitem(registry.METHODS, "mend", Mend(tmp_path / "nothing-here"))
    with pytest.raises(FailedPrecondition, match="holds none"):
        finish(editor.compute(MethodRequest("mend"), [edit("france", "madrid", "e1")]))
    assert_same(weights(model), before)


@pytest.mark.parametrize("family", NETWORKS)
def test_options_other_methods_take_are_refused(family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    editor, _, _ = make_editor("gemma3_text", tmp_path, monkeypatch, family=family)
    with pytest.raises(InvalidArgument, match=f"{family.upper()} takes no options.*steps"):
        finish(editor.compute(MethodRequest(family, steps=5), [edit("france", "madrid", "e1")]))


def test_an_editor_served_at_another_precision_matches_its_fingerprint(tmp_path: Path) -> None:
    network = EditorNetwork(config_for(taught("gemma3_text"), "gemma-3-270m-0123456789ab"))
    save_artifact(network, tmp_path / "gemma")
    assert find_artifact(tmp_path, "gemma-3-270m-0123456789ab-bf16") == tmp_path / "gemma"
    with pytest.raises(FailedPrecondition):
        find_artifact(tmp_path, "gemma-3-270m-0123456789ac")


def test_ke_update_is_the_gradient_reweighted_plus_one_rank_one_term() -> None:
    """KE's factors multiply out to the paper's s σ(η) (∇W L ⊙ softmax(α) γᵀ + softmax(β) ξᵀ), computed densely."""
    model, tokenizer = taught("gemma3_text"), build_tiny_tokenizer()
    torch.manual_seed(1)
    network = network_for(model, "x", "ke")
    assert isinstance(network, KnowledgeEditor)
    modules = network.config.modules
    reading = read_edit(model, modules, token_batch(tokenizer, [(prompt("france"), "madrid")]))
    d_in, d_out = network.config.d_in, network.config.d_out
    for layer, name in enumerate(modules):
        u, delta = reading.factors[name]
        a, b = network.update(layer, u, delta, reading.tokens)
        assert a.shape == (u.shape[0] + 1, d_out) and b.shape == (u.shape[0] + 1, d_in)
        alpha, gamma, beta, xi, eta = network.conditioners[layer](network.condition_on(reading.tokens)).split(
            [d_out, d_in, d_out, d_in, 1])
        gradient = gradient_from_factors(u, delta)  # (d_out, d_in)
        dense = network.config.edit_lr * torch.sigmoid(eta) * (
            gradient * torch.outer(torch.softmax(alpha, -1), gamma) + torch.outer(torch.softmax(beta, -1), xi))
        torch.testing.assert_close(a.T @ b, dense, rtol=1e-4, atol=1e-7)
    other = read_edit(model, modules, token_batch(tokenizer, [(prompt("italy"), "berlin")]))
    assert not torch.equal(network.condition_on(reading.tokens), network.condition_on(other.tokens)), \
        "the condition reads the edit's tokens"


def test_an_artifact_of_one_family_is_refused_by_the_other(tmp_path: Path) -> None:
    save_artifact(network_for(taught("gemma3_text"), "tiny", "mend"), tmp_path / "tiny")
    with pytest.raises(FailedPrecondition, match="holds a mend editor, not a ke one"):
        load_artifact(tmp_path / "tiny", KnowledgeEditor)
    assert isinstance(load_artifact(tmp_path / "tiny"), EditorNetwork)


def test_ke_is_on_the_wire_and_editctl_apply_takes_it() -> None:
    assert method_from_pb(parametric_pb.PARAMETRIC_METHOD_KE) == "ke" == Ke.name
    assert method_to_pb("ke") == parametric_pb.PARAMETRIC_METHOD_KE == METHOD_VALUES["ke"]
    args = build_parser({}).parse_args(["apply", "--method", "ke", "e1"])
    assert args.method == "ke" and "ke" in PARAMETRIC_METHODS and isinstance(registry.METHODS["ke"], Ke)
