"""The edit lifecycle over real gRPC with tokens: supersede, update, history, undo and the audit log, through a
SIGKILL and restart, and editctl's lifecycle commands against the same server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import EditcacheClient, EditInput, GenerationOptions
from client.editctl import main as editctl
from client.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from client.launch import LocalServer
from server.auth.roles import Role
from server.auth.tokens import TokenEntry, append_entry, hash_token
from tests.crash import kill

NAMESPACE = "life"
TOKENS = {  # name: (token, namespaces, role)
    "wally": ("wally-secret", (NAMESPACE,), Role.WRITE),
    "ada": ("ada-secret", ("*",), Role.ADMIN),
}
PROMPT = "the capital of france is"
ONE_TOKEN = GenerationOptions(max_new_tokens=1)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    data = tmp_path_factory.mktemp("lifecycle-data")
    tokens_file = data / "tokens.toml"
    for name, (token, namespaces, role) in TOKENS.items():
        append_entry(tokens_file, TokenEntry(name, hash_token(token), namespaces, role))
    server = LocalServer(tiny_model_dir, data, "--tokens-file", str(tokens_file), "--gate", "similarity")
    server.start()
    yield server
    server.stop()


def client(server: LocalServer, name: str) -> EditcacheClient:
    return server.client(NAMESPACE, token=TOKENS[name][0])


def answering_edit(server: LocalServer) -> str | None:
    with client(server, "wally") as wally:
        return wally.generate(PROMPT, options=ONE_TOKEN).edit_id


def audit(server: LocalServer) -> list[tuple[str, str, str]]:
    with client(server, "ada") as ada:
        return [(e.action, e.edit_id, e.token_name) for e in ada.iter_edit_events(page_size=2)]


def test_history_and_audit_log_survive_sigkill_and_undo_restores(server: LocalServer) -> None:
    with client(server, "wally") as wally:
        old = wally.add_edit("france", PROMPT, "rome")
        new = wally.add_edit("france", PROMPT, "berlin")  # the same fact: supersedes
        assert new.supersedes == old.id and wally.get_edit(old.id).superseded_by == new.id
        assert [e.id for e in wally.iter_edits()] == [new.id]
        updated = wally.update_edit(new.id, EditInput("france", PROMPT, "madrid"))
        assert (updated.id, updated.version, updated.target_new) == (new.id, 2, "madrid")
        with pytest.raises(PermissionDenied, match="ListEditEvents needs admin"):
            wally.list_edit_events()
    assert answering_edit(server) == new.id
    expected = [("add", old.id, "wally"), ("add", new.id, "wally"), ("supersede", old.id, "wally"),
                ("update", new.id, "wally")]
    assert audit(server) == expected

    kill(server)  # SIGKILL: no shutdown code runs
    server.start()
    assert audit(server) == expected
    with client(server, "wally") as wally:
        edit = wally.get_edit(new.id, history=True)
        assert [(e.id, e.version, e.target_new) for e in edit.history] == [(new.id, 1, "berlin"), (old.id, 1, "rome")]
        assert edit.target_new == "madrid"
        assert wally.delete_edit(new.id).supersedes == old.id  # the undo
        assert wally.get_edit(old.id).superseded_by == ""
    assert answering_edit(server) == old.id
    with client(server, "ada") as ada:
        (delete,) = [e for e in ada.iter_edit_events(edit_id=new.id) if e.action == "delete"]
        assert delete.before is not None and delete.before["target_new"] == "madrid" and delete.after is None

    kill(server)
    server.start()
    assert audit(server)[-2:] == [("restore", old.id, "wally"), ("delete", new.id, "wally")]
    assert answering_edit(server) == old.id


def test_bad_lifecycle_input_is_refused_with_what_to_fix(server: LocalServer) -> None:
    with client(server, "wally") as wally:
        with pytest.raises(InvalidArgument, match="not a valid regular expression"):
            wally.add_edits([EditInput("", "", "", kind="regex", pattern="(unclosed", replacement="x")])
        with pytest.raises(InvalidArgument, match="target_new must be empty for a erase edit|target_new must be"):
            wally.add_edits([EditInput("Pluto", "Pluto is a", "planet", kind="erase")])
        with pytest.raises(NotFound, match="no edit with id"):
            wally.update_edit("0" * 32, EditInput("Pluto", "Pluto is a", "dwarf"))
        with pytest.raises(NotFound):
            wally.get_edit("0" * 32, history=True)
        first = wally.add_edit("Pluto", "Pluto is a", "planet")
        wally.add_edit("Pluto", "Pluto is a", "dwarf planet")
        with pytest.raises(FailedPrecondition, match="superseded by edit"):
            wally.update_edit(first.id, EditInput("Pluto", "Pluto is a", "moon"))


def test_editctl_lifecycle_commands(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    def run(token: str, *args: str) -> str:
        assert editctl(["--addr", server.addr, "--namespace", NAMESPACE, "--token", TOKENS[token][0], *args]) == 0
        return capsys.readouterr().out

    erased = run("wally", "add", "--erase", "--subject", "Eiffel Tower", "--prompt", "The Eiffel Tower is in",
                 "--target-true", "Paris").strip()
    patch = run("wally", "--json", "add", "--patch", "If asked whether Ceres is a planet, say it is a dwarf planet",
                "--subject", "Ceres")
    regex = run("wally", "add", "--regex", r"\bEditCash\b", "--replace", "editcache").strip()
    with client(server, "wally") as wally:
        kinds = {e.id: e.kind for e in wally.iter_edits()}
    assert (kinds[erased], kinds[json.loads(patch)["id"]], kinds[regex]) == ("erase", "patch", "regex")
    assert "version 2" in run("wally", "update", erased, "--target-true", "Lyon")
    history = run("wally", "history", erased)
    assert "live" in history and "replaced" in history
    events = json.loads(run("ada", "--json", "events", "--edit", erased))
    assert [e["action"] for e in events] == ["add", "update"]
    assert events[1]["before"]["target_true"] == "Paris" and events[1]["after"]["target_true"] == "Lyon"
