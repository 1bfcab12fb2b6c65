"""WISE: the side memory's maths (shards, merging, routing), and the method through the ParametricEditor on tiny
models that know four facts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from client.convert import METHOD_VALUES
from client.editctl import build_parser
from client.evaluation.runner import PARAMETRIC_METHODS
from editcache.v1 import parametric_pb2 as parametric_pb
from server.errors import InvalidArgument
from server.parametric.additions import Act, Addition
from server.parametric.editor import METHODS, MethodRequest
from server.parametric.targets import finish
from server.parametric.wise import (
    SideMemory,
    Wise,
    WiseOptions,
    held_loss,
    merge_shards,
    routing_loss,
    shard_entries,
    task_vector,
)
from server.servicers.convert import method_from_pb, method_to_pb
from tests.unit.test_parametric_editor import answer, assert_same, edit, make_editor, weights
from tests.unit.test_parametric_grace import assert_restart_and_rollback_are_exact, greedy

UNRELATED = ("the capital of italy is", "the capital of spain is", "the capital of germany is")
# The tiny models hold their four facts far more firmly than a real model holds one: more and larger steps. At the
# default layer (1 of 4) the four "the capital of X is" prompts' inputs lie too close for a router to tell apart
# (italy's fourth greedy token moved); the last layer's differ enough.
TINY = MethodRequest("wise", steps=60, lr=10.0, layer=3)
TINY_METHOD = Wise()
DOWN = "model.layers.3.mlp.down_proj"


@pytest.fixture(autouse=True)
def tiny_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "wise", TINY_METHOD)


def change(edit_id: str, shard: int, values: torch.Tensor, key: list[float], threshold: float,
           shape: tuple[int, int] = (2, 3), ratio: float = 0.5) -> Addition:
    return Addition(edit_id, "m", "wise", {"change": values, "shard": torch.tensor([shard]),
                                           "mask_ratio": torch.tensor([ratio]), "shape": torch.tensor(shape),
                                           "key": torch.tensor(key), "threshold": torch.tensor([threshold])})


def test_a_shards_entries_are_its_share_of_the_matrix_disjoint_from_the_first_shards_and_the_same_every_run() -> None:
    shards = [shard_entries(s, (40, 50), 0.2) for s in range(6)]
    assert all(len(e) == 400 and len(set(e.tolist())) == 400 and bool((e[1:] > e[:-1]).all()) for e in shards)
    assert torch.equal(shards[0], shard_entries(0, (40, 50), 0.2))
    first_round = [set(e.tolist()) for e in shards[:5]]
    assert set().union(*first_round) == set(range(2000)), "five shards of 0.2 cover the matrix without overlap"
    overlap = len(first_round[0] & set(shards[5].tolist()))
    assert 0 < overlap < 400, "the sixth shard draws another order, and overlaps the first round"


def test_merging_elects_each_entrys_sign_and_averages_the_shards_that_agree() -> None:
    a = torch.tensor([[1.0, -2.0, 0.0, 3.0]])
    b = torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    c = torch.tensor([[0.0, -4.0, 5.0, 0.0]])
    # entry 0: a, b agree (+) → 2; entry 1: sum -5 elects −, a and c agree → -3; entry 2: c alone; entry 3: a alone.
    assert merge_shards([a, b, c]).tolist() == [[2.0, -3.0, 5.0, 3.0]]
    assert merge_shards([a]) is a


def test_a_shards_task_vector_sums_its_edits_changes_at_its_entries() -> None:
    entries = torch.tensor([0, 4])
    vector = task_vector([torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])], entries, (2, 3))
    assert vector.tolist() == [[1.5, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_the_routing_loss_adds_the_three_hinges_at_the_edits_scale() -> None:
    options = WiseOptions(silent_margin=0.1, fire_margin=0.5, gap_margin=0.3)
    # At scale 10: α = 1, β = 5, γ = 3. Memory scores 0.5 and 3 break α by 2 (mean 1); edit scores 4 and 6 miss β by
    # 1 on one (mean 0.5); the means' gap is 5 − 1.75 = 3.25 ≥ 3.
    loss = routing_loss(torch.tensor([4.0, 6.0]), torch.tensor([0.5, 3.0]), options, scale=10.0)
    assert loss.item() == pytest.approx(1.0 + 0.5)
    assert routing_loss(torch.tensor([9.0]), torch.tensor([0.5]), options, scale=10.0).item() == 0.0
    wide_gap = WiseOptions(silent_margin=0.1, fire_margin=0.5, gap_margin=0.5)  # γ = 5: the means' gap of 4 misses 1
    assert routing_loss(torch.tensor([5.0]), torch.tensor([1.0]), wide_gap, scale=10.0).item() == pytest.approx(1.0)


def test_a_new_edits_change_is_held_below_alpha_at_the_earlier_edits_keys() -> None:
    options = WiseOptions(silent_margin=0.1)  # α = 1 at scale 10
    assert held_loss(torch.tensor([0.5, 3.0]), options, scale=10.0).item() == pytest.approx(1.0)  # (0 + 2) / 2
    assert held_loss(torch.zeros(0), options, scale=10.0).item() == 0.0  # the first edit holds nothing


def test_the_side_memory_answers_only_where_its_change_passes_the_threshold_and_names_the_nearest_edit() -> None:
    # ratio 1: every entry of the 2x3 matrix is the shard's, in order; one edit's change is ΔW = [[1,0,0],[0,0,0]].
    memory = SideMemory.build([
        change("e1", 0, torch.tensor([1.0, 0, 0, 0, 0, 0]), [1.0, 0.0, 0.0], threshold=0.5, ratio=1.0),
        change("e2", 0, torch.tensor([0.0, 0, 0, 0, 0, 2.0]), [0.0, 0.0, 1.0], threshold=0.8, ratio=1.0),
    ])
    assert memory.delta.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]] and memory.threshold == 0.5
    inputs = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.2]]])  # (1, 3, d_in)
    output = torch.ones(1, 3, 2)
    changed, acts = memory.forward(inputs, output)
    # Position 0: ΔW x = (2, 0), score 2 > 0.5, nearest key e1; position 1: ΔW x = 0; position 2: (0, 0.4) below.
    assert changed.tolist() == [[[3.0, 1.0], [1.0, 1.0], [1.0, 1.0]]]
    assert acts == [Act(0, 0, "e1")]


def test_wise_answers_the_edit_and_leaves_other_prompts_token_for_token(tmp_path: Path) -> None:
    editor, model, tokenizer = make_editor("llama", tmp_path)
    original = weights(model)
    before = {p: greedy(model, tokenizer, p) for p in UNRELATED}
    (added,) = finish(editor.compute(TINY, [edit("france", "berlin", "e1")]))
    assert isinstance(added, Addition) and added.module == DOWN and added.kind == "wise"
    down = model.get_submodule(DOWN)
    assert isinstance(down, torch.nn.Linear)
    assert added.tensors["change"].shape == (round(WiseOptions().mask_ratio * down.weight.numel()),)
    assert answer(model, tokenizer, "the capital of france is") == "paris", "compute must not change the model"
    editor.commit("ns", TINY, [added])
    assert answer(model, tokenizer, "the capital of france is") == "berlin"
    assert {p: greedy(model, tokenizer, p) for p in UNRELATED} == before
    assert_same(weights(model), original)  # the weights never change: the side memory sits beside them
    with editor.watching() as fired:
        greedy(model, tokenizer, "the capital of france is")
    assert fired.edit_ids() == {"e1"}
    # Not asserted: that the router stays off on the other countries' prompts. The tiny llama's inputs at "is" lie
    # so close for all four countries that italy's and spain's pass the threshold there (28 and 33 against 24) even
    # though their answers stay; the memory's subjects are words it does not know. Routing is measured on Gemma.


def test_edits_fill_a_shard_before_the_next_and_both_stay_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  ) -> None:
    monkeypatch.setitem(METHODS, "wise", Wise(options=WiseOptions(edits_per_shard=1)))
    editor, model, tokenizer = make_editor("llama", tmp_path)
    request = replace(TINY, steps=100)  # the second edit writes a fresh subspace while holding the first's answer
    first, second = finish(editor.compute(request, [edit("france", "berlin", "e1"), edit("italy", "madrid", "e2")]))
    assert isinstance(first, Addition) and isinstance(second, Addition)
    assert [int(a.tensors["shard"]) for a in (first, second)] == [0, 1]
    editor.commit("ns", request, [first, second])
    assert answer(model, tokenizer, "the capital of france is") == "berlin"
    assert answer(model, tokenizer, "the capital of italy is") == "madrid"


def test_restart_rebuilds_the_same_side_memory_and_rollback_removes_exactly_one_edit(tmp_path: Path) -> None:
    assert_restart_and_rollback_are_exact(tmp_path, TINY, DOWN)


@pytest.mark.parametrize(("steps", "lr"), [(0, None), (None, 0.0), (None, -1.0), (None, float("nan"))])
def test_steps_or_lr_outside_their_range_are_refused_before_any_work(steps: int | None, lr: float | None,
                                                                     tmp_path: Path) -> None:
    editor, _, _ = make_editor("llama", tmp_path)
    with pytest.raises(InvalidArgument, match="options.(steps|lr)"):
        finish(editor.compute(MethodRequest("wise", steps=steps, lr=lr), [edit("france", "berlin", "e1")]))


def test_wise_is_on_the_wire_and_editctl_apply_takes_it() -> None:
    assert method_from_pb(parametric_pb.PARAMETRIC_METHOD_WISE) == "wise" == Wise.name
    assert method_to_pb("wise") == parametric_pb.PARAMETRIC_METHOD_WISE == METHOD_VALUES["wise"]
    args = build_parser({}).parse_args(["apply", "--method", "wise", "e1"])
    assert args.method == "wise" and "wise" in PARAMETRIC_METHODS
