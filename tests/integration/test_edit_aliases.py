"""Aliases over the real servers (gRPC and HTTP) on the tiny model with the default gate (the trained classifier, at
its own threshold, on the real sentence encoder): a query naming only an alias routes to the edit, an unrelated
one does not, and the same edit without the alias leaves the alias query with the base model. editctl's --alias and
its export/import round trip carry the aliases. A reverse question, naming the edit's new object and not its subject,
finds the edit through the object gate and is answered by its subject (route reverse); another question about the
object does not find it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from client import EditcacheClient, EditInput
from client.editctl import main as editctl
from client.launch import LocalServer

SUBJECT, ALIAS = "Space Needle", "Seattle Needle"
PROMPT = f"The {SUBJECT} is located in the city of"
# Not the alias key's own wording: the gate lets it in only when it reads the alias as the key's subject (with the
# edit's subject there instead, gate v2 scores it 0.06, under its threshold of 0.235; with the alias, 0.79).
ALIAS_QUERY = f"Where is the {ALIAS} located?"
UNRELATED = f"The {ALIAS} was designed by"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = LocalServer(tiny_model_dir, tmp_path_factory.mktemp("alias-data"), http=True)
    server.start()
    yield server
    server.stop()


def fresh_namespace() -> str:
    return "a-" + uuid.uuid4().hex[:10]


def route_of(client: EditcacheClient, prompt: str) -> tuple[str, str | None, float]:
    answer = client.generate(prompt)
    return answer.route, answer.edit_id, answer.gate_score


def test_an_alias_query_routes_to_the_edit_and_an_unrelated_query_does_not(server: LocalServer) -> None:
    with server.client(fresh_namespace()) as client:
        threshold = client.server_info().threshold
        (edit,) = client.add_edits([EditInput(SUBJECT, PROMPT, "Taipei", "Seattle", aliases=(ALIAS,))])
        assert edit.aliases == (ALIAS,) and client.get_edit(edit.id).aliases == (ALIAS,)
        route, edit_id, score = route_of(client, ALIAS_QUERY)
        assert route != "base" and edit_id == edit.id and score >= threshold
        route, edit_id, score = route_of(client, UNRELATED)
        assert route == "base" and score < threshold
    with server.client(fresh_namespace()) as client:  # the same edit without its alias
        client.add_edits([EditInput(SUBJECT, PROMPT, "Taipei", "Seattle")])
        route, _, score = route_of(client, ALIAS_QUERY)
        assert route == "base" and score < threshold


def test_a_reverse_question_routes_to_the_edit_by_its_object_and_another_question_about_the_object_does_not(
    server: LocalServer,
) -> None:
    with server.client(fresh_namespace()) as client:
        threshold = client.server_info().threshold
        (edit,) = client.add_edits([EditInput("Amira Solen", "Who is Amira Solen's father?", "Tomas Brandt")])
        answer = client.generate("Who is the daughter of Tomas Brandt?")
        assert (answer.route, answer.edit_id, answer.text) == ("reverse", edit.id, " Amira Solen")
        assert answer.gate_score >= threshold
        route, _, score = route_of(client, "Where was Tomas Brandt born?")
        assert route == "base" and score < threshold
        client.delete_edit(edit.id)
        route, _, score = route_of(client, "Who is the daughter of Tomas Brandt?")
        assert route == "base" and score < threshold


def test_an_erased_fact_asked_backwards_is_refused(server: LocalServer) -> None:
    """The erase edit is keyed by the answer it erases, so the backwards question finds it and gets the refusal."""
    with server.client(fresh_namespace()) as client:
        (erase,) = client.add_edits([EditInput("Amira Solen", "Who is Amira Solen's father?", "", "Tomas Brandt",
                                               kind="erase")])
        answer = client.generate("Who is the daughter of Tomas Brandt?")
        assert (answer.route, answer.edit_id, answer.text) == ("reverse", erase.id, " I don't know.")
        assert route_of(client, "Where was Tomas Brandt born?")[0] == "base"


def test_editctl_add_alias_and_the_export_import_round_trip_keep_aliases(
    server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, copy = fresh_namespace(), fresh_namespace()
    flags = ["--addr", server.addr, "--namespace", source]
    assert editctl([*flags, "add", "--subject", SUBJECT, "--prompt", PROMPT, "--target", "Taipei",
                    "--alias", ALIAS, "--alias", "the Needle"]) == 0
    exported = tmp_path / "edits.jsonl"
    assert editctl([*flags, "export-edits", "-o", str(exported)]) == 0
    (line,) = exported.read_text().splitlines()
    assert json.loads(line)["aliases"] == [ALIAS, "the Needle"]
    assert editctl(["--addr", server.addr, "--namespace", copy, "import", str(exported), "--format", "jsonl"]) == 0
    capsys.readouterr()
    assert editctl(["--addr", server.addr, "--namespace", copy, "--json", "list"]) == 0
    edits = json.loads(capsys.readouterr().out)
    assert [e["aliases"] for e in edits] == [[ALIAS, "the Needle"]]
    with server.client(copy) as client:
        assert route_of(client, ALIAS_QUERY)[1] == edits[0]["id"]


def test_http_takes_and_returns_aliases_and_the_audit_log_records_them(server: LocalServer) -> None:
    namespace = fresh_namespace()
    headers = {"X-Editcache-Namespace": namespace}
    body = {"edits": [{"subject": SUBJECT, "prompt": PROMPT, "target_new": "Taipei", "aliases": [ALIAS]}]}
    added = httpx.post(f"{server.http_url}/v1/edits", json=body, headers=headers, timeout=60)
    assert added.status_code == 200, added.text
    (edit,) = added.json()["data"]
    assert edit["aliases"] == [ALIAS]
    with server.client(namespace) as client:
        assert route_of(client, ALIAS_QUERY)[1] == edit["id"]
        (event,) = client.list_edit_events(edit_id=edit["id"]).events
        assert event.after is not None and event.after["aliases"] == [ALIAS]
