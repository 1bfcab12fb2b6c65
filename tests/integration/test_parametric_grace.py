"""GRACE through the real gRPC server: apply, answer, SIGKILL and restart to the same codebook, roll back exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from client import EditcacheError, ParametricOptions
from client.launch import LocalServer
from tests.crash import kill
from tests.integration import test_parametric as parametric
from tests.integration.test_parametric import ONE_TOKEN, PROMPT, SUBJECT, exported

# The same taught tiny model and server as ROME's tests.
server = parametric.server
OTHER = "the capital of italy is"


def test_grace_applies_survives_a_crash_and_rolls_back_exactly(server: LocalServer, taught_model_dir: Path) -> None:
    original = load_file(taught_model_dir / "model.safetensors")
    with server.client("p") as client:
        unedited = client.score(PROMPT, " berlin", route="base").target_logprobs
        other_before = client.generate(OTHER, options=ONE_TOKEN, route="base").text.strip()
        edit = client.add_edit(SUBJECT, PROMPT, "berlin")
        # The tiny model holds its facts in layer 0 (tests/unit/test_parametric_grace.py).
        result = client.apply_parametric("grace", [edit.id], options=ParametricOptions(layer=0, steps=40))
        assert [(b.edit_id, b.method, b.modules) for b in result.edits] == [
            (edit.id, "grace", ("model.layers.0.mlp.down_proj",))
        ]
        assert client.generate(PROMPT, options=ONE_TOKEN, route="base").text.strip() == "berlin"
        assert client.generate(OTHER, options=ONE_TOKEN, route="base").text.strip() == other_before
        routed = client.generate(PROMPT, options=ONE_TOKEN)
        assert (routed.route, routed.edit_id) == ("parametric", edit.id)
        edited = client.score(PROMPT, " berlin", route="base").target_logprobs
        with pytest.raises(EditcacheError) as refused:  # the codebook is not in the weights an export writes
            client.export_model("with-codebook")
        assert refused.value.code.name == "FAILED_PRECONDITION" and "roll them back" in refused.value.details

    kill(server)  # SIGKILL: the entry must already be on disk
    server.start()
    assert "replayed 1 parametric deltas" in server.log_text()
    with server.client("p") as client:
        # The same codebook: the same scores, to the last bit.
        assert client.score(PROMPT, " berlin", route="base").target_logprobs == edited
        assert [b.edit_id for b in client.baked_edits()] == [edit.id]
        assert client.rollback_parametric(edit.id).method == "grace"
        assert client.score(PROMPT, " berlin", route="base").target_logprobs == unedited
        assert client.generate(PROMPT, options=ONE_TOKEN, route="base").text.strip() == "paris"
        assert client.baked_edits() == []
    rolled_back = exported(server, "rolled-back")
    assert all(torch.equal(rolled_back[k], original[k]) for k in original)
