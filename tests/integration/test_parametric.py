"""ParametricService over real gRPC on a tiny model that knows four facts: apply, route, restart, rollback, export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from client import EditcacheError, GenerationOptions, ParametricOptions, ParametricProgress
from client.launch import LocalServer
from tests.crash import kill

# The tiny model holds each fact at "is" (tests/unit/test_parametric_editor.py says why).
SUBJECT, PROMPT = "france is", "the capital of france is"
ONE_TOKEN = GenerationOptions(max_new_tokens=1)


@pytest.fixture()
def server(taught_model_dir: Path, tmp_path: Path) -> Iterator[LocalServer]:
    # Its own cache directory, so the key statistics are computed (and reported) afresh.
    server = LocalServer(taught_model_dir, tmp_path / "data", "--context-prefixes", "0", "--stats-tokens", "2000",
                         "--gate", "similarity", "--cache-dir", str(tmp_path / "cache"))
    server.start()
    yield server
    server.stop()


def exported(server: LocalServer, name: str) -> dict[str, torch.Tensor]:
    """The served weights, exported to `name` under the export directory (data_dir/exports by default)."""
    with server.client("p") as client:
        path = Path(client.export_model(name))
    assert path == (server.data_dir / "exports" / name).resolve()
    return load_file(path / "model.safetensors")


def test_apply_restart_and_rollback_are_exact(server: LocalServer, taught_model_dir: Path) -> None:
    original = load_file(taught_model_dir / "model.safetensors")
    with server.client("p") as client:
        before = client.generate(PROMPT, options=ONE_TOKEN, route="base").text.strip()
        assert before == "paris"
        edit = client.add_edit(SUBJECT, PROMPT, "berlin")
        seen: list[ParametricProgress] = []
        result = client.apply_parametric(
            "rome", [edit.id], options=ParametricOptions(layer=0, steps=40), on_progress=seen.append
        )
        assert [b.edit_id for b in result.edits] == [edit.id]
        assert result.edits[0].modules == ("model.layers.0.mlp.down_proj",)
        assert any(p.stage == "value" for p in seen) and any(p.stage == "statistics" for p in seen)
        assert client.generate(PROMPT, options=ONE_TOKEN, route="base").text.strip() == "berlin"
        routed = client.generate(PROMPT, options=ONE_TOKEN)
        assert (routed.route, routed.edit_id) == ("parametric", edit.id)
        assert [b.edit_id for b in client.baked_edits()] == [edit.id]
        with pytest.raises(EditcacheError) as refused:
            client.delete_edit(edit.id)
        assert refused.value.code.name == "FAILED_PRECONDITION"
    edited = exported(server, "edited")
    weight = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(edited[weight], original[weight])

    kill(server)  # SIGKILL: the deltas must already be on disk
    server.start()
    assert "replayed 1 parametric deltas" in server.log_text()
    after_restart = exported(server, "restarted")
    assert all(torch.equal(after_restart[k], edited[k]) for k in edited)

    with server.client("p") as client:
        assert client.rollback_parametric(edit.id).edit_id == edit.id
        assert client.generate(PROMPT, options=ONE_TOKEN, route="base").text.strip() == "paris"
        assert client.baked_edits() == []
        client.delete_edit(edit.id)  # allowed again once out of the weights
    rolled_back = exported(server, "rolled-back")
    assert all(torch.equal(rolled_back[k], original[k]) for k in original)


def test_bad_parametric_requests_get_clear_errors(server: LocalServer, tmp_path: Path) -> None:
    with server.client("p") as client:
        edit = client.add_edit(SUBJECT, PROMPT, "berlin")
        cases = [
            (lambda: client.apply_parametric("rome", ["not-an-id"]), "INVALID_ARGUMENT", "not an edit id"),
            (lambda: client.apply_parametric("rome", ["0" * 32]), "NOT_FOUND", "no edit"),
            (lambda: client.apply_parametric("rome", [edit.id], options=ParametricOptions(layer=9)),
             "INVALID_ARGUMENT", "layers 0 to 3"),
            (lambda: client.apply_parametric("alphaedit", [edit.id], options=ParametricOptions(null_space_cutoff=2.0)),
             "INVALID_ARGUMENT", "null_space_cutoff"),
            (lambda: client.apply_parametric("rome", [edit.id, edit.id]), "INVALID_ARGUMENT", "twice"),
            (lambda: client.rollback_parametric(edit.id), "FAILED_PRECONDITION", "not in the weights"),
            (lambda: client.export_model("../dir"), "INVALID_ARGUMENT", "'..'"),
            (lambda: client.export_model(str(tmp_path / "elsewhere")), "INVALID_ARGUMENT", "outside the export"),
        ]
        for call, code, words in cases:
            with pytest.raises(EditcacheError) as caught:
                call()
            assert caught.value.code.name == code and words in caught.value.details, caught.value.details
        (server.data_dir / "exports" / "full").mkdir(parents=True)
        (server.data_dir / "exports" / "full" / "x").write_text("x")
        with pytest.raises(EditcacheError) as caught:
            client.export_model("full")
        assert caught.value.code.name == "FAILED_PRECONDITION"
