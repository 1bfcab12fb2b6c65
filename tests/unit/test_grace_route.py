"""GRACE's route: an answer a codebook entry changed reports route parametric with the entry's edit, and only such an
answer; per row of a batch, on the tiny model with the real editor, router and base generator."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from server.generators.base import BaseGenerator
from server.generators.batching import ModelThread
from server.generators.decoding import CausalLM
from server.parametric.additions import Act, Addition, Attachments
from server.parametric.editor import MethodRequest, ParametricEditor
from server.parametric.targets import finish
from server.router import Router
from server.scope import ScopeCheck
from server.types import Decision, Edit, GenerationOptions, Hit, Query, Route
from tests.unit.fakes import FixedGate, FixedMemory, HashEmbedder
from tests.unit.test_parametric_editor import edit, make_editor

INSIDE = "the capital of france is"  # the edit's own prompt: its key, within the radius
OUTSIDE = "the capital of italy is"
ONE_TOKEN = GenerationOptions(max_new_tokens=1)


@pytest.fixture(scope="module")
def graced(tmp_path_factory: pytest.TempPathFactory) -> tuple[ParametricEditor, torch.nn.Module, object, Edit]:
    """A taught tiny llama with one GRACE entry at layer 0 (where its facts live): france → berlin."""
    editor, model, tokenizer = make_editor("llama", tmp_path_factory.mktemp("grace-route"))
    entry = edit("france", "berlin", "e1")
    request = MethodRequest("grace", steps=40, layer=0, in_gate=False)
    editor.commit("ns", request, finish(editor.compute(request, [entry])))
    return editor, model, tokenizer, entry


def router_on(editor: ParametricEditor, model: torch.nn.Module, tokenizer: object, edits: Sequence[Edit],
              gate_score: float = 0.0) -> Router:
    """The real router and base generator over the edited tiny model; the memory holds `edits`, which the gate
    scores `gate_score` (0: every query goes to the base route, as with --remove-from-gate)."""
    memory = FixedMemory([Hit(e, 0.9) for e in edits])
    base = BaseGenerator(CausalLM(model, tokenizer, watch=editor.watching))  # type: ignore[arg-type]
    return Router(
        scope=ScopeCheck(HashEmbedder(16), memory, FixedGate({e.id: gate_score for e in edits}), 4), memory=memory,
        generators={Route.BASE: base, Route.PARAMETRIC: base}, in_scope_route=Route.PARAMETRIC, threshold=0.5,
        baked=lambda e: True,
    )


def answered(router: Router, query: Query) -> tuple[str, Decision]:
    decision = router.decide(query)
    generation = router.generate(query, decision, ONE_TOKEN)
    return generation.text.strip(), router.acted_decision(query, decision, generation.acted)


def test_a_query_inside_the_radius_reports_parametric_with_the_entrys_edit(graced: tuple) -> None:
    editor, model, tokenizer, entry = graced
    router = router_on(editor, model, tokenizer, [entry])
    text, decision = answered(router, Query("ns", INSIDE))
    assert router.decide(Query("ns", INSIDE)).route is Route.BASE  # the gate did not send it anywhere
    assert (text, decision.route, decision.edit) == ("berlin", Route.PARAMETRIC, entry)


def test_a_query_outside_every_radius_stays_on_the_base_route(graced: tuple) -> None:
    editor, model, tokenizer, entry = graced
    text, decision = answered(router_on(editor, model, tokenizer, [entry]), Query("ns", OUTSIDE))
    assert (text, decision.route, decision.edit) == ("rome", Route.BASE, None)


def test_scoring_reports_the_route_as_generation_does(graced: tuple) -> None:
    editor, model, tokenizer, entry = graced
    router = router_on(editor, model, tokenizer, [entry])

    def scored_route(query: Query) -> Route:
        decision = router.decide(query)
        return router.acted_decision(query, decision, router.score(query, decision, " berlin").acted).route

    assert scored_route(Query("ns", INSIDE)) is Route.PARAMETRIC
    assert scored_route(Query("ns", OUTSIDE)) is Route.BASE


def test_a_forced_base_route_is_reported_parametric_when_an_entry_answered(graced: tuple) -> None:
    # The harness forces route base to measure parametric methods: it must see which answers the codebook gave.
    editor, model, tokenizer, entry = graced
    router = router_on(editor, model, tokenizer, [entry])
    assert answered(router, Query("ns", INSIDE, route=Route.BASE))[1].route is Route.PARAMETRIC
    assert answered(router, Query("ns", OUTSIDE, route=Route.BASE))[1].route is Route.BASE


def test_another_namespaces_entry_reports_the_route_but_not_the_edit(graced: tuple) -> None:
    # The codebook is shared by every namespace (as baked weights are); the edit is only its own namespace's to see.
    editor, model, tokenizer, entry = graced
    text, decision = answered(router_on(editor, model, tokenizer, [entry]), Query("other", INSIDE))
    assert (text, decision.route, decision.edit) == ("berlin", Route.PARAMETRIC, None)


def test_the_gates_own_edit_stays_the_answers_edit_when_its_entry_acted(graced: tuple) -> None:
    editor, model, tokenizer, entry = graced
    router = router_on(editor, model, tokenizer, [entry], gate_score=1.0)
    text, decision = answered(router, Query("ns", INSIDE))
    assert (text, decision.route, decision.edit, decision.score) == ("berlin", Route.PARAMETRIC, entry, 1.0)


def left_padded(tokenizer: object, prompts: list[str]) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "left"  # type: ignore[attr-defined]
    return dict(tokenizer(prompts, return_tensors="pt", padding=True))  # type: ignore[operator]


@pytest.mark.parametrize("inside_row", [0, 1])
def test_in_a_two_row_batch_only_the_row_inside_a_radius_reports_the_entry(graced: tuple, inside_row: int) -> None:
    editor, model, tokenizer, entry = graced
    # The other row is longer, so the inside row is padded: its pad positions must not count either way.
    prompts = [INSIDE, "who speaks german in the capital of italy is"]
    if inside_row == 1:
        prompts.reverse()
    batch = left_padded(tokenizer, prompts)
    assert int(batch["attention_mask"].sum(1).min()) < batch["attention_mask"].shape[1], "a padded row"
    with editor.watching() as acted, torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=2, do_sample=False)  # type: ignore[operator]
    other_row = 1 - inside_row
    assert acted.of_row(inside_row) == ("e1",) and acted.of_row(other_row) == ()
    assert tokenizer.decode(out[inside_row, -2:]).split()[0] == "berlin"  # type: ignore[attr-defined]
    router = router_on(editor, model, tokenizer, [entry])
    decisions = [router.acted_decision(Query("ns", p), router.decide(Query("ns", p)), acted.of_row(i))
                 for i, p in enumerate(prompts)]
    assert [(d.route, d.edit) for d in decisions][inside_row] == (Route.PARAMETRIC, entry)
    assert [(d.route, d.edit) for d in decisions][other_row] == (Route.BASE, None)


class FirstColumn:
    """A state that acts at position 0 of every row of every call (for the padding rule alone)."""

    def __init__(self, additions: Sequence[Addition]) -> None:
        self.edit_id = additions[0].edit_id

    def forward(self, inputs: torch.Tensor, output: torch.Tensor) -> tuple[torch.Tensor, list[Act]]:
        return output, [Act(row, 0, self.edit_id) for row in range(inputs.shape[0])]


def test_an_act_at_a_padded_position_is_not_reported(graced: tuple) -> None:
    _, model, tokenizer, _ = graced
    hooks = (len(model._forward_hooks), len(model._forward_pre_hooks))
    attachments = Attachments(model, {"first": FirstColumn})
    attachments.attach([Addition("x", "model.layers.1.mlp.down_proj", "first", {})])
    try:
        batch = left_padded(tokenizer, ["the capital of france is", "who speaks german in the capital of italy is"])
        with attachments.watching() as acted, torch.inference_mode():
            model(**batch)
        assert acted.rows == {1: ["x"]}  # row 0 starts with padding
        with attachments.watching() as acted, torch.inference_mode():
            model(input_ids=batch["input_ids"])  # no mask: every position counts
        assert acted.rows == {0: ["x"], 1: ["x"]}
    finally:
        attachments.attach([])
    assert not model.get_submodule("model.layers.1.mlp.down_proj")._forward_hooks
    assert (len(model._forward_hooks), len(model._forward_pre_hooks)) == hooks  # its mask hooks went with it


def test_in_the_running_batch_each_answer_reports_only_its_own_rows_acts(graced: tuple) -> None:
    # Batched decoding: the two requests share every forward call, each in its own row; only the one inside the
    # radius may report the entry, whichever joined first.
    editor, model, tokenizer, entry = graced
    thread = ModelThread(max_batch=4)
    try:
        lm = CausalLM(model, tokenizer, watch=editor.watching, batching=thread)  # type: ignore[arg-type]
        options = GenerationOptions(max_new_tokens=3)
        hold = threading.Event()
        thread.call(lambda: hold.wait(30))  # both requests queue behind it, then join the batch together
        with ThreadPoolExecutor(2) as pool:
            answers = pool.map(lambda p: lm.decode(p, options), [OUTSIDE, INSIDE])
            threading.Event().wait(0.3)
            hold.set()
            outside, inside = answers
    finally:
        thread.shutdown()
    assert inside.text.split()[0] == "berlin" and inside.acted == ("e1",)
    assert outside.text.split()[0] == "rome" and outside.acted == ()
