"""ROME, MEMIT and FT-L through the ParametricEditor on tiny models that first learn four facts."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from server.errors import FailedPrecondition, InvalidArgument
from server.models.arch import arch_for
from server.parametric import rome as rome_module
from server.parametric.deltas import WeightDelta
from server.parametric.editor import MethodRequest, ParametricEditor, ParametricSettings
from server.parametric.ledger import Ledger
from server.parametric.prompts import EditPrompts
from server.parametric.targets import finish
from server.parametric.wordings import Wordings
from server.types import Edit
from tests.tiny import FACTS, build_tiny_model, build_tiny_tokenizer, teach

ARCHS = ("llama", "gpt2", "gemma3_text", "gptj")


def edit(country: str, target: str, id_: str) -> Edit:
    # A 4-layer model trained on four sentences holds each fact at "is", not at the country's token
    # as a real model does; the subject includes "is" so the edit acts there.
    return Edit(id_, "ns", f"{country} is", f"the capital of {country} is", target, None, (), 0.0)


def answer(editor_model: torch.nn.Module, tokenizer: object, prompt: str) -> str:
    ids = tokenizer(prompt, return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        return str(tokenizer.convert_ids_to_tokens(int(editor_model(**ids).logits[0, -1].argmax())))  # type: ignore[attr-defined]


@functools.cache
def taught_weights(model_type: str) -> dict[str, torch.Tensor]:
    tokenizer = build_tiny_tokenizer()
    model = teach(build_tiny_model(model_type, layers=4), tokenizer)
    for fact in FACTS:  # the tests below edit and check these facts: the model must hold each firmly
        prompt, city = fact.rsplit(" ", 1)
        confidence = math.exp(-nll(model, tokenizer, prompt, city))
        assert confidence > 0.9, f"the taught tiny {model_type} gives {city!r} {confidence:.2f} after {prompt!r}"
    return model.state_dict()


def make_editor(
    model_type: str, tmp_path: Path, wordings: Wordings | None = None, stats_text: Sequence[str] = FACTS,
    model_samples: int = 4,
) -> tuple[ParametricEditor, torch.nn.Module, object]:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(model_type, layers=4)
    model.load_state_dict(taught_weights(model_type))
    model.requires_grad_(False)
    text = tmp_path / "text.txt"
    text.write_text("\n".join(tuple(stats_text) * 4))
    # The tiny models only know their facts in the training sentence: no context prefixes.
    settings = ParametricSettings(tmp_path / "cache", (text,), stats_tokens=500, model_samples=model_samples,
                                  prefixes=0, wordings=wordings or Wordings())
    ledger = Ledger(tmp_path / "parametric.sqlite", f"tiny-{model_type}")
    editor = ParametricEditor(model, tokenizer, arch_for(model.config), ledger, f"tiny-{model_type}", settings)
    return editor, model, tokenizer


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


# GPT-J runs attention and the MLP side by side, so layer 0's MLP sees the token "is" alone, the same key in
# every country's sentence: its edit goes one layer up, where the key carries the country.
@pytest.mark.parametrize(("model_type", "layer"), (("llama", 0), ("gpt2", 0), ("gptj", 1)))
def test_rome_changes_the_edited_fact_and_keeps_the_others(model_type: str, layer: int, tmp_path: Path) -> None:
    editor, model, tokenizer = make_editor(model_type, tmp_path)
    assert answer(model, tokenizer, "the capital of france is") == "paris"
    request = MethodRequest("rome", steps=40, layer=layer)
    deltas = finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    assert answer(model, tokenizer, "the capital of france is") == "paris", "compute must not change the weights"
    editor.commit("ns", request, deltas)
    assert answer(model, tokenizer, "the capital of france is") == "berlin"
    assert answer(model, tokenizer, "the capital of italy is") == "rome"
    assert answer(model, tokenizer, "the capital of spain is") == "madrid"


def test_rome_on_gemma_3_raises_the_new_answer_through_the_post_mlp_norm(tmp_path: Path) -> None:
    # Gemma 3 normalises each MLP's output, which bounds what one layer can add; a 4-layer toy
    # trained on four sentences does not flip (the real model does, docs/BENCHMARKS.md), so this
    # checks that the edit, written in layer 0, moves the answer the right way.
    editor, model, tokenizer = make_editor("gemma3_text", tmp_path)
    before = nll(model, tokenizer, "the capital of france is", "berlin")
    request = MethodRequest("rome", steps=40, layer=0)
    (delta,) = finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    assert isinstance(delta, WeightDelta) and delta.module == "model.layers.0.mlp.down_proj" and delta.v is not None
    editor.commit("ns", request, [delta])
    assert nll(model, tokenizer, "the capital of france is", "berlin") < before - 1.0


def nll(model: torch.nn.Module, tokenizer: object, prompt: str, word: str) -> float:
    ids = tokenizer(prompt, return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(**ids).logits[0, -1], dim=-1)
    return -float(logprobs[tokenizer.convert_tokens_to_ids(word)])  # type: ignore[attr-defined]


def test_rome_optimises_the_value_on_other_wordings_of_the_prompt_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wordings = Wordings.from_records([{"subject": "spain is", "prompt": "the capital of spain is",
                                       "rephrase_prompt": "spain is governed from"}])
    editor, model, tokenizer = make_editor("llama", tmp_path, wordings)
    given: list[EditPrompts] = []
    real_rome = rome_module.rome

    def spy(*args: object) -> object:
        given.append(args[6])  # type: ignore[arg-type]
        return real_rome(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(rome_module, "rome", spy)
    request = MethodRequest("rome", steps=40, layer=0)
    editor.commit("ns", request, finish(editor.compute(request, [edit("france", "berlin", "e1")])))
    assert given == [EditPrompts(key=("the capital of france is",),
                                 value=("the capital of france is", "france is governed from"))]
    assert answer(model, tokenizer, "the capital of france is") == "berlin"


def test_memit_writes_a_batch_of_edits(tmp_path: Path) -> None:
    editor, model, tokenizer = make_editor("llama", tmp_path)
    request = MethodRequest("memit", layers=(0, 1), steps=40, mom2_weight=1.0)
    edits = [edit("france", "berlin", "e1"), edit("italy", "madrid", "e2")]
    deltas = finish(editor.compute(request, edits))
    assert {d.edit_id for d in deltas} == {"e1", "e2"} and len(deltas) == 4  # one per edit and layer
    editor.commit("ns", request, deltas)
    assert answer(model, tokenizer, "the capital of france is") == "berlin"
    assert answer(model, tokenizer, "the capital of italy is") == "madrid"


def test_memit_on_gemma_3_moves_the_edited_facts_and_keeps_the_others(tmp_path: Path) -> None:
    # Each Gemma 3 MLP writes through a norm, so one layer can only turn its output, not grow it; asking
    # layers for residual changes they cannot write once broke every answer of the model.
    editor, model, tokenizer = make_editor("gemma3_text", tmp_path)
    request = MethodRequest("memit", layers=(0, 1), steps=40, mom2_weight=1.0)
    edited = (("france", "berlin"), ("italy", "madrid"))
    before = [nll(model, tokenizer, f"the capital of {c} is", t) for c, t in edited]
    edits = [edit(country, target, f"e{i}") for i, (country, target) in enumerate(edited)]
    editor.commit("ns", request, finish(editor.compute(request, edits)))
    for (country, target), old in zip(edited, before, strict=True):
        assert nll(model, tokenizer, f"the capital of {country} is", target) < old - 1.0
    assert answer(model, tokenizer, "the capital of spain is") == "madrid"
    assert answer(model, tokenizer, "the capital of germany is") == "berlin"


def test_fine_tuning_stays_within_its_bound(tmp_path: Path) -> None:
    editor, model, tokenizer = make_editor("llama", tmp_path)
    request = MethodRequest("ft", layer=0, steps=60, lr=1e-2, norm_constraint=0.05)
    (delta,) = finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    assert isinstance(delta, WeightDelta) and delta.dense and float(delta.u.abs().max()) <= 0.05 + 1e-7
    editor.commit("ns", request, [delta])
    assert answer(model, tokenizer, "the capital of france is") == "berlin"


@pytest.mark.parametrize("scale", [math.nan, math.inf, 1e4])
def test_a_delta_that_is_not_finite_or_far_too_large_is_refused_before_commit(tmp_path: Path, scale: float) -> None:
    editor, model, _ = make_editor("llama", tmp_path)
    original = weights(model)
    request = MethodRequest("ft", layer=0)
    weight = model.get_submodule("model.layers.0.mlp.down_proj").weight  # (out, in)
    rank_one = WeightDelta("e1", "model.layers.0.mlp.down_proj", weight[:, 0] * scale, weight[0] / weight[0].norm())
    dense = WeightDelta("e2", "model.layers.0.mlp.down_proj", weight.detach() * scale)
    for delta in (rank_one, dense):
        with pytest.raises(InvalidArgument, match="nothing was written"):
            editor.commit("ns", request, [delta])
    assert editor.baked_edits() == [] and list(editor._ledger.deltas()) == []
    assert_same(weights(model), original)


def test_rollback_restores_the_exact_weights_and_replay_rebuilds_them(tmp_path: Path) -> None:
    editor, model, tokenizer = make_editor("llama", tmp_path)
    original = weights(model)
    request = MethodRequest("rome", steps=20, layer=0)
    for e in (edit("france", "berlin", "e1"), edit("italy", "madrid", "e2")):
        editor.commit("ns", request, finish(editor.compute(request, [e])))
    edited = weights(model)
    assert {b.edit_id for b in editor.baked_edits("ns")} == {"e1", "e2"}

    # A restart: the same original weights, the same ledger, replayed in order.
    editor.close()
    replayed, model2, _ = make_editor("llama", tmp_path)
    assert replayed.replay() == 2
    assert_same(weights(model2), edited)

    replayed.rollback("ns", "e1")
    assert replayed.baked("ns", "e1") is None and replayed.baked("ns", "e2") is not None
    replayed.rollback("ns", "e2")
    assert_same(weights(model2), original)
    with pytest.raises(FailedPrecondition, match="not in the weights"):
        replayed.rollback("ns", "e2")


def test_bad_requests_are_refused_before_any_work(tmp_path: Path) -> None:
    editor, _, _ = make_editor("llama", tmp_path)
    with pytest.raises(InvalidArgument, match="method"):
        finish(editor.compute(MethodRequest("lora"), [edit("france", "berlin", "e1")]))
    with pytest.raises(InvalidArgument, match="layers 0 to 3"):
        finish(editor.compute(MethodRequest("rome", layer=7), [edit("france", "berlin", "e1")]))
    no_subject = Edit("e3", "ns", "portugal", "the capital of france is", "rome", None, (), 0.0)
    with pytest.raises(FailedPrecondition, match="does not occur"):
        finish(editor.compute(MethodRequest("rome"), [no_subject]))


def test_an_edit_is_applied_once(tmp_path: Path) -> None:
    editor, _, _ = make_editor("llama", tmp_path)
    request = MethodRequest("rome", steps=5)
    e = edit("france", "berlin", "e1")
    editor.commit("ns", request, finish(editor.compute(request, [e])))
    with pytest.raises(FailedPrecondition, match="already in the weights"):
        finish(editor.compute(request, [e]))


def test_a_ledger_refuses_another_models_weights(tmp_path: Path) -> None:
    editor, _, _ = make_editor("llama", tmp_path)
    request = MethodRequest("rome", steps=5)
    editor.commit("ns", request, finish(editor.compute(request, [edit("france", "berlin", "e1")])))
    editor.close()
    with pytest.raises(FailedPrecondition, match="parametric deltas for model"):
        Ledger(tmp_path / "parametric.sqlite", "another-model")


def test_a_ledger_stamped_with_the_old_fingerprint_scheme_is_migrated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    editor, _, _ = make_editor("llama", tmp_path)  # its ledger names the weights "tiny-llama"
    request = MethodRequest("rome", steps=5)
    editor.commit("ns", request, finish(editor.compute(request, [edit("france", "berlin", "e1")])))
    editor.close()
    with caplog.at_level(logging.WARNING, logger="server.parametric.ledger"):
        migrated = Ledger(tmp_path / "parametric.sqlite", "tiny-llama-new-scheme", legacy_model_id="tiny-llama")
    assert "migrating" in caplog.text
    assert [b.edit_id for b in migrated.baked_edits()] == ["e1"]
    migrated.close()
    # Migrated: the new name alone now opens it, and the old one is another model's.
    Ledger(tmp_path / "parametric.sqlite", "tiny-llama-new-scheme").close()
    with pytest.raises(FailedPrecondition, match="parametric deltas for model"):
        Ledger(tmp_path / "parametric.sqlite", "tiny-llama")
