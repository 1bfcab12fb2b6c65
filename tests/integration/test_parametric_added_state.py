"""Methods that add state beside the weights (T-Patcher's neurons, CaliNET's slots, WISE's side memory) through the real
gRPC server: apply, answer, SIGKILL and restart to the same state, roll back exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from client import ParametricOptions
from client.launch import LocalServer
from tests.crash import kill
from tests.integration import test_parametric as parametric
from tests.integration.test_parametric import ONE_TOKEN, PROMPT, SUBJECT, exported

# The same taught tiny model and server as ROME's tests.
server = parametric.server
OTHER = "the capital of italy is"


# T-Patcher's and CaliNET's default layer is the last, the tiny model's fourth; WISE is asked for it (at its default,
# the second, the four countries' inputs lie too close to route apart: tests/unit/test_parametric_wise.py). The taught
# facts need more and larger steps than Gemma's defaults (tests/unit/test_parametric_tpatcher.py), the more so against
# the memory's weight of 3, which the unit tests lower to 1 and a request cannot. CaliNET's slots start from a seed
# of the edit's id, which the server draws at random: with 60 steps 2 ids in 20 still answered "paris", with 100 none
# in 60 (training stops once the edit takes, so the extra steps cost nothing when they are not needed).
# T-Patcher's default memory about the edit's own subject (8 of the shipped table's questions, 24 greedy tokens) kept
# the edit from taking in 60 steps on this 4-layer model taught four facts ("paris" stayed): asked for none.
@pytest.mark.parametrize(("method", "options", "module"), [
    ("tpatcher", ParametricOptions(steps=60, lr=1.0, own_subject_questions=0, own_subject_tokens=0),
     "model.layers.3.mlp"),
    ("calinet", ParametricOptions(steps=100, lr=1.0), "model.layers.3.mlp"),
    ("wise", ParametricOptions(layer=3, steps=60, lr=10.0), "model.layers.3.mlp.down_proj"),
])
def test_added_state_applies_survives_a_crash_and_rolls_back_exactly(
    server: LocalServer, taught_model_dir: Path, method: str, options: ParametricOptions, module: str
) -> None:
    original = load_file(taught_model_dir / "model.safetensors")
    with server.client("p") as client:
        unedited = client.score(PROMPT, " berlin", route="base").target_logprobs
        other_before = client.generate(OTHER, options=ONE_TOKEN, route="base").text.strip()
        edit = client.add_edit(SUBJECT, PROMPT, "berlin")
        result = client.apply_parametric(method, [edit.id], options=options)
        assert [(b.edit_id, b.method, b.modules) for b in result.edits] == [(edit.id, method, (module,))]
        assert client.generate(PROMPT, options=ONE_TOKEN, route="base").text.strip() == "berlin"
        assert client.generate(OTHER, options=ONE_TOKEN, route="base").text.strip() == other_before
        routed = client.generate(PROMPT, options=ONE_TOKEN, route="base")
        assert (routed.route, routed.edit_id) == ("parametric", edit.id)  # the added state acted: its edit answered
        edited = client.score(PROMPT, " berlin", route="base").target_logprobs

    kill(server)  # SIGKILL: the added state must already be on disk
    server.start()
    assert "replayed 1 parametric deltas" in server.log_text()
    with server.client("p") as client:
        assert client.score(PROMPT, " berlin", route="base").target_logprobs == edited  # to the last bit
        assert client.rollback_parametric(edit.id).method == method
        assert client.score(PROMPT, " berlin", route="base").target_logprobs == unedited
        assert client.generate(PROMPT, options=ONE_TOKEN, route="base").text.strip() == "paris"
        assert client.baked_edits() == []
    rolled_back = exported(server, "rolled-back")
    assert all(torch.equal(rolled_back[k], original[k]) for k in original)
