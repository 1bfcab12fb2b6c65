"""T-Patcher: the neurons' maths, and the method through the ParametricEditor on tiny models that know four facts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from server.errors import InvalidArgument
from server.models.arch import ARCHS, arch_for
from server.parametric import tpatcher
from server.parametric.additions import Act, Addition
from server.parametric.calinet import CaliNet
from server.parametric.editor import METHODS, MethodRequest
from server.parametric.memory_subjects import SubjectTable
from server.parametric.prompts import EditPrompts, answer_token_ids, build_batch
from server.parametric.targets import answer_nll, finish, forward
from server.parametric.tpatcher import (
    MemoryGroup,
    Neurons,
    PatchOptions,
    TPatcher,
    adding_neuron,
    answer_loss,
    ffn_module,
    firing_mask,
    initial_neuron,
    memory_loss,
    memory_prompts,
    own_subject_questions,
)
from server.types import Edit
from tests.tiny import HIDDEN, build_tiny_model, build_tiny_tokenizer
from tests.unit.test_parametric_editor import answer, assert_same, edit, make_editor, weights
from tests.unit.test_parametric_grace import assert_restart_and_rollback_are_exact, greedy

UNRELATED = ("the capital of italy is", "the capital of spain is", "the capital of germany is")
# The tiny models hold their four facts far more firmly than a real model holds one (taught to near-certainty):
# the neuron needs larger and more steps than the defaults chosen for Gemma-3-270M, and with the memory weighted
# three times the answer (Gemma's default) it no longer turns the tiny llama's "paris" into "berlin": weight 1.
TINY = MethodRequest("tpatcher", steps=40, lr=0.5)
TINY_METHOD = TPatcher(options=PatchOptions(memory_weight=1.0))


@pytest.fixture(autouse=True)
def tiny_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "tpatcher", TINY_METHOD)


def neuron(edit_id: str, key: list[float], bias: float, value: list[float]) -> Addition:
    return Addition(edit_id, "m", "tpatcher", {"key": torch.tensor([key]), "bias": torch.tensor([bias]),
                                               "value": torch.tensor([value])})


def test_a_neuron_adds_its_value_times_its_activation_where_it_fires_and_nothing_elsewhere() -> None:
    neurons = Neurons.build([neuron("e1", [1.0, 0.0], -0.5, [1.0, 2.0, 3.0]),
                             neuron("e2", [0.0, 1.0], 0.0, [5.0, 0.0, 0.0])])
    inputs = torch.tensor([[[2.0, 0.0], [0.0, -1.0]], [[0.0, 3.0], [0.25, 0.0]]])  # (2, 2, d_in)
    output = torch.ones(2, 2, 3)
    changed, acts = neurons.forward(inputs, output)
    # Row 0, position 0: e1 at relu(2 - 0.5) = 1.5; row 1, position 0: e2 at 3. Nothing else fires.
    assert changed.tolist() == [[[2.5, 4.0, 5.5], [1.0, 1.0, 1.0]], [[16.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]
    assert acts == [Act(0, 0, "e1"), Act(1, 0, "e2")]
    quiet = output[1:, 1:]
    silent, none = neurons.forward(inputs[1:, 1:], quiet)
    assert silent is quiet and none == []  # the module's own output, untouched


def test_the_neuron_starts_at_one_on_the_edit_and_zero_at_the_memorys_centre() -> None:
    edit_inputs = torch.tensor([[3.0, 1.0, 0.0], [5.0, 1.0, 0.0]])
    memory = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, -1.0]])
    key, bias = initial_neuron(edit_inputs, memory)
    assert torch.allclose(edit_inputs.mean(0) @ key + bias, torch.tensor(1.0))
    assert torch.allclose(memory.mean(0) @ key + bias, torch.tensor(0.0))


def test_the_memory_loss_counts_only_the_inputs_above_the_margin() -> None:
    assert memory_loss(torch.tensor([-3.0, -2.0, 0.0, 1.0]), -1.0).item() == pytest.approx(1.5)  # (1 + 2) / 2
    assert memory_loss(torch.tensor([-3.0, -2.0]), -1.0).item() == 0.0


def test_each_neuron_fires_at_its_own_place_and_keeps_silent_at_the_others() -> None:
    assert torch.equal(firing_mask(torch.tensor([0, 1, 2]), 3), torch.eye(3, dtype=torch.bool))  # one per token
    assert firing_mask(torch.tensor([0, 0]), 1).tolist() == [[True, True]]  # CaliNET's two slots, one place


def test_the_memory_asks_the_edits_prompt_and_wordings_about_each_other_subject_and_the_subject_itself() -> None:
    e = Edit("e1", "ns", "Sade Adu", "What does Sade Adu play? They play", "piano", None, (), 0.0)
    prompts = EditPrompts(key=("What does Sade Adu play? They play", "Hello. What does Sade Adu play? They play"),
                          value=("What does Sade Adu play? They play", "Hello. What does Sade Adu play? They play",
                                 "Sade Adu performs on the"))
    assert memory_prompts(e, prompts, ("John Lennon", "Toko Yasuda"), continued=2) == [
        MemoryGroup(("What does John Lennon play? They play", "John Lennon performs on the"), "John Lennon", 2),
        MemoryGroup(("What does Toko Yasuda play? They play", "Toko Yasuda performs on the"), "Toko Yasuda", 2),
        MemoryGroup(("Sade Adu is a",), "Sade Adu", 2),
    ]
    # other questions about the edit's own subject, continued further (where the edit's answer could follow them)
    assert memory_prompts(e, prompts, (), ("{} is a", "The mother tongue of {} is"), continued=2, own_continued=8) == [
        MemoryGroup(("Sade Adu is a", "The mother tongue of Sade Adu is"), "Sade Adu", 8)]


def test_firing_on_the_subject_the_memory_leaves_out_the_prompt_about_the_edits_own_subject() -> None:
    e = Edit("e1", "ns", "Sade Adu", "What does Sade Adu play? They play", "piano", None, (), 0.0)
    prompts = EditPrompts(key=("What does Sade Adu play? They play",), value=("What does Sade Adu play? They play",))
    assert memory_prompts(e, prompts, ("John Lennon",), own_questions=()) == [
        MemoryGroup(("What does John Lennon play? They play",), "John Lennon")]


def test_fire_at_names_a_position() -> None:
    with pytest.raises(ValueError, match="fire_at must be one of last, subject"):
        PatchOptions(fire_at="first")
    with pytest.raises(InvalidArgument, match="options.fire_at must be one of last, subject, got 'first'"):
        TPatcher().check(MethodRequest("tpatcher", fire_at="first"))
    with pytest.raises(InvalidArgument, match=r"options.memory_subjects must be in \[0, 256\], got 1000"):
        TPatcher().check(MethodRequest("tpatcher", memory_subjects=1000))
    TPatcher().check(MethodRequest("tpatcher", fire_at="subject", memory_subjects=64))  # default own questions unused
    with pytest.raises(InvalidArgument, match="fire_at subject needs options.memory_subjects of at least 1"):
        TPatcher().check(MethodRequest("tpatcher", fire_at="subject", memory_subjects=0))
    with pytest.raises(InvalidArgument, match="memory_subjects of at least 1"):  # the method's own fire_at counts
        TPatcher(options=PatchOptions(fire_at="subject")).check(MethodRequest("tpatcher", memory_subjects=0))
    TPatcher().check(MethodRequest("tpatcher", memory_subjects=0))  # the last token: "{subject} is a" stays
    with pytest.raises(InvalidArgument, match=r"options.own_subject_tokens must be in \[0, 64\], got 65"):
        TPatcher().check(MethodRequest("tpatcher", own_subject_tokens=65))
    with pytest.raises(InvalidArgument, match=r"options.own_subject_questions must be in \[0, 64\], got -1"):
        TPatcher().check(MethodRequest("tpatcher", own_subject_questions=-1))
    with pytest.raises(InvalidArgument, match="own_subject_tokens need options.fire_at last"):
        TPatcher().check(MethodRequest("tpatcher", fire_at="subject", memory_subjects=4, own_subject_questions=2))
    TPatcher().check(MethodRequest("tpatcher", own_subject_questions=64, own_subject_tokens=0))


def test_a_neuron_firing_on_the_subject_below_the_last_layer_writes_the_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ROME writes: at layer 1 of the tiny llama's 4 the neuron fires on "france is" and attention carries its
    value to the answer; the other capitals, its memory, keep their greedy tokens. The request asks for it."""
    table = SubjectTable({"the capital of {}": ("france is", "germany is", "italy is", "spain is")})
    monkeypatch.setitem(METHODS, "tpatcher", TPatcher(table, PatchOptions(memory_weight=1.0)))
    editor, model, tokenizer = make_editor("llama", tmp_path)
    before = {p: greedy(model, tokenizer, p) for p in UNRELATED}
    request = MethodRequest("tpatcher", layer=1, steps=40, lr=0.5, fire_at="subject", memory_subjects=3)
    trained_with: list[PatchOptions] = []
    real_train = tpatcher.train_neurons

    def recording_train(*args: Any) -> Any:
        trained_with.append(args[6])  # (model, tokenizer, arch, edit, layer, prompts, options, ...)
        return real_train(*args)

    monkeypatch.setattr(tpatcher, "train_neurons", recording_train)
    (added,) = finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    assert isinstance(added, Addition) and added.module == "model.layers.1.mlp"
    assert [(o.fire_at, o.memory_subjects) for o in trained_with] == [("subject", 3)]  # the request's, not defaults
    editor.commit("ns", request, [added])
    assert answer(model, tokenizer, "the capital of france is") == "berlin"
    assert {p: greedy(model, tokenizer, p) for p in UNRELATED} == before


def test_an_edits_memory_is_drawn_from_the_subjects_asked_its_question_the_same_on_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny edit's subject is "france is" (tests/unit/test_parametric_editor.py), so its template is "the
    # capital of {}": its other subjects come first, then (16 wanted) the other template's fill the rest.
    # With the edit's old answer known, a subject that shares it comes first, whatever question it was asked.
    table = SubjectTable({"the capital of {}": ("france is", "germany is", "italy is", "spain is"),
                          "the language of {}": ("portugal is",)},
                         {"the language of {}": {"portugal is": "Paris"}, "the capital of {}": {"italy is": "rome"}})
    monkeypatch.setitem(METHODS, "tpatcher", TPatcher(table, TINY_METHOD.options))
    drawn: list[tuple[str, ...]] = []
    real_memory_inputs = tpatcher.memory_inputs

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        groups = args[3]
        drawn.append(tuple(g.subject for g in groups if g.subject != "france is"))  # type: ignore[attr-defined]
        return real_memory_inputs(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tpatcher, "memory_inputs", spy)
    editor, model, tokenizer = make_editor("llama", tmp_path)
    request = MethodRequest("tpatcher", steps=2)
    for _ in range(2):
        finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    knowing = replace(edit("france", "berlin", "e1"), target_true="paris")
    finish(editor.compute(request, [knowing]))
    # firing on the subject, and CaliNET, draw as an edit without an old answer (as they were measured)
    finish(editor.compute(MethodRequest("tpatcher", steps=2, layer=1, fire_at="subject"), [knowing]))
    monkeypatch.setitem(METHODS, "calinet", CaliNet(table))
    finish(editor.compute(MethodRequest("calinet", steps=2), [knowing]))
    first, again, by_answer, on_subject, calinet = drawn
    assert first == again
    assert sorted(first[:3]) == ["germany is", "italy is", "spain is"] and first[3:] == ("portugal is",)
    assert by_answer[0] == "portugal is" and sorted(by_answer[1:]) == ["germany is", "italy is", "spain is"]
    assert on_subject == calinet == first


def test_the_memory_asks_the_edits_own_subject_other_questions_of_the_table_and_continues_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = SubjectTable({"the capital of {}": ("france is", "germany is"), "the language of {}": ("portugal is",)})
    monkeypatch.setitem(METHODS, "tpatcher", TPatcher(table, TINY_METHOD.options))
    seen: list[list[MemoryGroup]] = []
    real_memory_inputs = tpatcher.memory_inputs

    def spy(*args: Any) -> torch.Tensor:
        seen.append(list(args[3]))
        return real_memory_inputs(*args)

    monkeypatch.setattr(tpatcher, "memory_inputs", spy)
    editor, _, _ = make_editor("llama", tmp_path)
    request = MethodRequest("tpatcher", steps=2, own_subject_questions=1, own_subject_tokens=3)
    finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    request = MethodRequest("tpatcher", steps=2)  # the defaults: 8 questions (the table has one), 24 tokens
    finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    request = MethodRequest("tpatcher", steps=2, own_subject_questions=0, own_subject_tokens=0)
    finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    request = MethodRequest("tpatcher", steps=2, layer=1, fire_at="subject", memory_subjects=2)
    finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    asked, by_default, off, on_subject = seen
    assert asked[-1] == MemoryGroup(("france is is a", "the language of france is"), "france is", 3)
    assert all(g.continued == 0 for g in asked[:-1])  # a one-token answer: the other subjects' prompts end there
    assert by_default[-1] == MemoryGroup(("france is is a", "the language of france is"), "france is", 24)
    assert off[-1] == MemoryGroup(("france is is a",), "france is", 0)  # ROME's prompt alone, as far as the answer
    assert all(g.subject != "france is" for g in on_subject)  # firing on the subject: nothing about its own


def test_the_questions_about_the_edits_own_subject_are_never_its_own_wordings_nor_of_its_kind() -> None:
    e = Edit("e1", "ns", "Sade Adu", "What does Sade Adu play? They play", "piano", "jazz", (), 0.0)
    prompts = EditPrompts(key=("What does Sade Adu play? They play",),
                          value=("What does Sade Adu play? They play", "Sade Adu performs on the"))
    table = SubjectTable({"What does {} play? They play": ("A",), "{} performs on the": ("B",), "{} is a": ("C",),
                          "{} was born in": ("D",), "{} plays the instrument": ("E",), "{} is known for": ("F",)},
                         {"{} plays the instrument": {"E": "Piano"}, "{} is known for": {"F": "jazz"}})
    options = PatchOptions(own_subject_questions=10)
    # the table has no answers for the edit's template: questions giving its new or old answer are of its kind
    assert own_subject_questions(e, prompts, table, options) == ("{} was born in",)
    unknown_truth = replace(e, target_true=None)
    assert sorted(own_subject_questions(unknown_truth, prompts, table, options)) == ["{} is known for",
                                                                                    "{} was born in"]


def test_the_neurons_sit_beside_the_module_holding_both_projections() -> None:
    assert ffn_module(ARCHS["gemma3_text"], 17) == "model.layers.17.mlp"
    assert ffn_module(ARCHS["gpt2"], 3) == "transformer.h.3.mlp"


def assert_the_edit_answers_and_other_prompts_keep_every_token(tmp_path: Path, request: MethodRequest,
                                                               neurons: int) -> None:
    """`request`'s method (T-Patcher's or CaliNET's) writes france → berlin on the tiny llama with `neurons` neurons
    beside its last FFN (the default layer, as the papers'), leaves other prompts and the weights as they were, and
    its neurons report their edit."""
    editor, model, tokenizer = make_editor("llama", tmp_path)
    original = weights(model)
    before = {p: greedy(model, tokenizer, p) for p in UNRELATED}
    (added,) = finish(editor.compute(request, [edit("france", "berlin", "e1")]))
    assert isinstance(added, Addition) and added.module == "model.layers.3.mlp" and added.kind == request.method
    assert added.tensors["key"].shape == (neurons, HIDDEN)
    assert answer(model, tokenizer, "the capital of france is") == "paris", "compute must not change the model"
    editor.commit("ns", request, [added])
    assert answer(model, tokenizer, "the capital of france is") == "berlin"
    assert {p: greedy(model, tokenizer, p) for p in UNRELATED} == before
    assert_same(weights(model), original)  # the weights never change: the neurons sit beside them
    baked = editor.baked("ns", "e1")
    assert baked is not None and baked.method == request.method and baked.modules == (added.module,)
    with editor.watching() as fired:
        greedy(model, tokenizer, "the capital of france is")
    assert fired.edit_ids() == {"e1"}


def test_tpatcher_answers_the_edit_and_leaves_other_prompts_token_for_token(tmp_path: Path) -> None:
    assert_the_edit_answers_and_other_prompts_keep_every_token(tmp_path, TINY, neurons=1)


def test_a_several_token_answer_is_written_by_a_neuron_per_token_and_comes_out_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paper's multiple-neuron patching for generation: "berlin rome" gets two neurons, one firing where the prompt
    predicts "berlin" and one where "... france is berlin" predicts "rome"; greedy decoding writes both and then goes
    on as the unedited model goes on after them (no neuron fires again after the answer), and the other capitals keep
    every token, Germany's "berlin" and what follows it too: the memory holds each of their prompts continued by its
    own answer's token, where the second neuron must stay silent."""
    table = SubjectTable({"the capital of {}": ("germany is", "italy is", "spain is")})
    monkeypatch.setitem(METHODS, "tpatcher", TPatcher(table, TINY_METHOD.options))
    editor, model, tokenizer = make_editor("llama", tmp_path)
    before = {p: greedy(model, tokenizer, p) for p in UNRELATED}
    after_the_answer = greedy(model, tokenizer, "the capital of france is berlin rome", tokens=2)
    request = MethodRequest("tpatcher", steps=300, lr=0.2)  # the tiny model holds "paris" after "berlin" firmly
    (added,) = finish(editor.compute(request, [edit("france", "berlin rome", "e1")]))
    assert isinstance(added, Addition) and added.tensors["key"].shape == (2, HIDDEN)
    editor.commit("ns", request, [added])
    wanted = answer_token_ids(tokenizer, "berlin rome")
    assert len(wanted) == 2
    assert greedy(model, tokenizer, "the capital of france is", tokens=4) == wanted + after_the_answer
    assert {p: greedy(model, tokenizer, p) for p in UNRELATED} == before


def test_restart_rebuilds_the_same_neurons_and_rollback_removes_exactly_one(tmp_path: Path) -> None:
    assert_restart_and_rollback_are_exact(tmp_path, TINY, "model.layers.3.mlp")


def test_an_edits_neurons_for_each_answer_token_are_replayed_and_rolled_back_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = SubjectTable({"the capital of {}": ("france is", "germany is", "italy is", "spain is")})
    monkeypatch.setitem(METHODS, "tpatcher", TPatcher(table, TINY_METHOD.options))  # each edit keeps the other's
    assert_restart_and_rollback_are_exact(tmp_path, MethodRequest("tpatcher", steps=300, lr=0.2), "model.layers.3.mlp",
                                          ("berlin rome", "madrid paris"))


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text", "gptj"])
def test_at_the_last_layer_the_answer_loss_without_the_model_equals_the_one_through_it(model_type: str) -> None:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(model_type, layers=4)
    model.requires_grad_(False)
    arch = arch_for(model.config)
    rewrite = build_batch(tokenizer, ["the capital of france is", "a city of france is"], "france", "berlin rome")
    torch.manual_seed(0)
    key, bias, value = torch.randn(3, HIDDEN), torch.randn(3), torch.randn(3, HIDDEN)  # three neurons, as_rows
    last = answer_loss(model, arch, 3, rewrite)
    with adding_neuron(model.get_submodule(ffn_module(arch, 3)), key, bias, value):
        through = answer_nll(forward(model, rewrite, rewrite.answer_positions), rewrite.answer_ids)
    assert torch.allclose(last(key, bias, value), through, atol=1e-5)
