"""GRACE's route through the real gRPC server: an answer a codebook entry changed reports route parametric with the
entry's edit, in Generate, GenerateStream and Score; an answer no entry changed reports base."""

from __future__ import annotations

from client import ParametricOptions
from client.launch import LocalServer
from tests.integration import test_parametric as parametric
from tests.integration.test_parametric import ONE_TOKEN, PROMPT, SUBJECT

# The same taught tiny model and server as ROME's tests.
server = parametric.server
OTHER = "the capital of italy is"


def test_an_answer_an_entry_changed_reports_parametric_and_its_edit(server: LocalServer) -> None:
    with server.client("p") as client:
        edit = client.add_edit(SUBJECT, PROMPT, "berlin")
        # Out of the gate: only the codebook can make these answers parametric.
        client.apply_parametric("grace", [edit.id], options=ParametricOptions(layer=0, steps=40, remove_from_gate=True))

        inside = client.generate(PROMPT, options=ONE_TOKEN)
        assert (inside.text.strip(), inside.route, inside.edit_id) == ("berlin", "parametric", edit.id)
        stream = client.stream(PROMPT, options=ONE_TOKEN)
        assert "".join(stream).strip() == "berlin"
        assert stream.result is not None and (stream.result.route, stream.result.edit_id) == ("parametric", edit.id)
        scored = client.score(PROMPT, " berlin")
        assert (scored.route, scored.edit_id) == ("parametric", edit.id)

        outside = client.generate(OTHER, options=ONE_TOKEN)
        assert (outside.text.strip(), outside.route, outside.edit_id) == ("rome", "base", None)
        assert (client.score(OTHER, " rome").route, client.score(OTHER, " rome").edit_id) == ("base", None)

    with server.client("q") as other:  # the codebook is shared, the edit is not theirs to see
        answer = other.generate(PROMPT, options=ONE_TOKEN)
        assert (answer.text.strip(), answer.route, answer.edit_id) == ("berlin", "parametric", None)

    with server.client("p") as client:  # rolled back: nothing acts, the base model's answer again
        client.rollback_parametric(edit.id)  # (and the edit is back in the gate: ask the base route)
        after = client.generate(PROMPT, options=ONE_TOKEN, route="base")
        assert (after.text.strip(), after.route, after.edit_id) == ("paris", "base", None)
