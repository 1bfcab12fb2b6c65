"""CaliNET: the slots' maths, and the method through the ParametricEditor on tiny models that know four facts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from client.convert import METHOD_VALUES
from client.editctl import build_parser
from client.evaluation.runner import PARAMETRIC_METHODS
from editcache.v1 import parametric_pb2 as parametric_pb
from server.parametric.additions import Addition
from server.parametric.calinet import CaliNet, SlotOptions, initial_slots, slot_generator
from server.parametric.editor import METHODS, MethodRequest
from server.parametric.registry import ADDED_STATE
from server.parametric.tpatcher import patch_loss
from server.servicers.convert import method_from_pb, method_to_pb
from tests.unit.test_parametric_grace import assert_restart_and_rollback_are_exact
from tests.unit.test_parametric_tpatcher import assert_the_edit_answers_and_other_prompts_keep_every_token

# As for T-Patcher (tests/unit/test_parametric_tpatcher.py), with its values: the tiny models hold their four facts far
# more firmly than a real model holds one, so the slots need larger and more steps than Gemma's defaults, and with the
# memory weighted three times the answer the slots no longer turn the tiny llama's "paris" into "berlin": weight 1.
TINY = MethodRequest("calinet", steps=40, lr=0.5)
TINY_METHOD = CaliNet(options=SlotOptions(memory_weight=1.0))


@pytest.fixture(autouse=True)
def tiny_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "calinet", TINY_METHOD)


def test_every_slot_starts_silent_at_the_memorys_centre_and_near_one_at_the_edit() -> None:
    torch.manual_seed(0)
    edit_inputs, memory = torch.randn(3, 16) + 4.0, torch.randn(20, 16)
    keys, biases, values = initial_slots(edit_inputs, memory, 5, 0.5, 2.0, 7, slot_generator("e1"))
    assert keys.shape == (5, 16) and biases.shape == (5,) and values.shape == (5, 7)
    assert torch.allclose(memory.mean(0) @ keys.T + biases, torch.zeros(5), atol=1e-5)
    assert torch.allclose(edit_inputs.mean(0) @ keys.T + biases, torch.ones(5), atol=0.5)
    assert torch.allclose(values.norm(dim=1), torch.full((5,), 2.0))
    assert len({tuple(k.tolist()) for k in keys}) == 5, "the random parts set the slots apart"
    again = initial_slots(edit_inputs, memory, 5, 0.5, 2.0, 7, slot_generator("e1"))
    assert all(torch.equal(a, b) for a, b in zip((keys, biases, values), again, strict=True)), "seeded by the edit"
    other = initial_slots(edit_inputs, memory, 5, 0.5, 2.0, 7, slot_generator("e2"))
    assert not torch.equal(keys, other[0])


def test_the_loss_adds_the_weighted_hinges_over_every_slot_to_the_answers_nll() -> None:
    options = SlotOptions(activation_weight=0.5, memory_weight=2.0, fire_margin=1.0, silent_margin=-1.0)
    edit_pre = torch.tensor([[2.0, 0.0]])  # (p, n) that must fire: one of two is 1 short of the margin, the mean 0.5
    memory_pre = torch.tensor([[-3.0, 0.0], [1.0, -2.0]])  # that must not: two of four break the margin by 1 and 2
    assert patch_loss(torch.tensor(0.5), edit_pre, memory_pre, options).item() == pytest.approx(
        0.5 + 0.5 * 0.5 + 2.0 * 1.5)
    assert patch_loss(torch.tensor(0.5), edit_pre + 1.0, memory_pre - 5.0, options).item() == pytest.approx(0.5)


def test_the_slots_of_two_edits_build_one_state_that_names_each_slots_edit() -> None:
    def slots(edit_id: str, n: int) -> Addition:
        return Addition(edit_id, "m", "calinet", {"key": torch.eye(n, 2), "bias": torch.zeros(n),
                                                  "value": torch.ones(n, 3)})

    state = ADDED_STATE["calinet"]([slots("e1", 2), slots("e2", 1)])
    changed, acts = state.forward(torch.tensor([[[0.0, 2.0]]]), torch.zeros(1, 1, 3))  # fires e1's second slot
    assert changed.tolist() == [[[2.0, 2.0, 2.0]]] and [a.edit_id for a in acts] == ["e1"]


def test_calinet_answers_the_edit_and_leaves_other_prompts_token_for_token(tmp_path: Path) -> None:
    assert_the_edit_answers_and_other_prompts_keep_every_token(tmp_path, TINY, neurons=SlotOptions().slots)


def test_restart_rebuilds_the_same_slots_and_rollback_removes_exactly_one_set(tmp_path: Path) -> None:
    assert_restart_and_rollback_are_exact(tmp_path, TINY, "model.layers.3.mlp")


def test_calinet_is_on_the_wire_and_editctl_apply_takes_it() -> None:
    assert method_from_pb(parametric_pb.PARAMETRIC_METHOD_CALINET) == "calinet" == CaliNet.name
    assert method_to_pb("calinet") == parametric_pb.PARAMETRIC_METHOD_CALINET == METHOD_VALUES["calinet"]
    args = build_parser({}).parse_args(["apply", "--method", "calinet", "e1"])
    assert args.method == "calinet" and "calinet" in PARAMETRIC_METHODS
