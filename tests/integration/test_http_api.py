"""The OpenAI-compatible HTTP API, driven by the official `openai` client against a real server on a tiny model.

The server has a counterfactual adapter (so an edited prompt is answered with the edit's own words) and a tokens
file (so the same bearer tokens and roles as gRPC are in force); the namespace comes from X-Editcache-Namespace.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from client import ChatTurn, EditcacheClient, GenerationOptions
from client.launch import LocalServer
from server.auth.roles import Role
from server.auth.tokens import TokenEntry, append_entry, hash_token

PROMPT = "the capital of france is"
QUESTION = "what is the capital of france"
UNRELATED = "who speaks german in berlin"
NS = "X-Editcache-Namespace"
TOKENS = {  # name: (token, namespaces, role)
    "writer": ("writer-secret", ("*",), Role.WRITE),
    "reader": ("reader-secret", ("http-read",), Role.READ),
    "admin": ("admin-secret", ("*",), Role.ADMIN),
}


@pytest.fixture(scope="module")
def server(counterfactual_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    model_dir, adapter_dir = counterfactual_model
    data = tmp_path_factory.mktemp("http-data")
    tokens_file = data / "tokens.toml"
    for name, (token, namespaces, role) in TOKENS.items():
        append_entry(tokens_file, TokenEntry(name, hash_token(token), namespaces, role))
    server = LocalServer(model_dir, data, "--counterfactual-adapter", str(adapter_dir), "--tokens-file",
                         str(tokens_file), "--torch-threads", "1", http=True)
    server.start()
    yield server
    server.stop()


def fresh_namespace() -> str:
    return "h-" + uuid.uuid4().hex[:10]


def openai_client(server: LocalServer, namespace: str, token: str = TOKENS["writer"][0]) -> openai.OpenAI:
    # No retries: a 429 or 503 is what a test wants to see, not to wait out.
    return openai.OpenAI(base_url=f"{server.http_url}/v1", api_key=token, default_headers={NS: namespace},
                         max_retries=0)


def http(server: LocalServer, method: str, path: str, namespace: str, token: str | None = TOKENS["writer"][0],
         **kwargs: Any) -> httpx.Response:
    headers = {NS: namespace, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.request(method, f"{server.http_url}{path}", headers=headers, timeout=60, **kwargs)


def grpc_client(server: LocalServer, namespace: str) -> EditcacheClient:
    return server.client(namespace, token=TOKENS["writer"][0])


def add_edit(server: LocalServer, namespace: str, target_new: str = "rome", subject: str = "france",
             prompt: str = PROMPT) -> dict[str, Any]:
    reply = http(server, "POST", "/v1/edits", namespace,
                 json={"edits": [{"subject": subject, "prompt": prompt, "target_new": target_new}]})
    assert reply.status_code == 200, reply.text
    (edit,) = reply.json()["data"]
    return edit  # type: ignore[no-any-return]


def test_models_lists_the_served_model(server: LocalServer) -> None:
    (model,) = openai_client(server, "default").models.list().data
    with grpc_client(server, "default") as client:
        assert model.id == client.server_info().model
    assert model.model_extra is not None and model.model_extra["editcache"]["in_scope_route"] == "counterfactual"


def test_an_edited_prompt_gets_the_edited_answer_streamed_and_not(server: LocalServer) -> None:
    namespace = fresh_namespace()
    edit = add_edit(server, namespace)
    chat = openai_client(server, namespace).chat.completions
    messages: Any = [{"role": "user", "content": QUESTION}]

    whole = chat.create(model="any", messages=messages, max_tokens=4)
    content = whole.choices[0].message.content
    assert content is not None and content.split()[0] == "rome"
    extension = whole.model_extra["editcache"] if whole.model_extra else {}
    assert (extension["route"], extension["edit_id"]) == ("counterfactual", edit["id"])
    assert extension["gate_score"] > 0 and extension["edit"]["target_new"] == "rome"
    assert extension["related_edit_ids"] == []  # no edit about rome in the namespace
    assert whole.usage is not None and whole.usage.completion_tokens <= 4 and whole.usage.prompt_tokens > 0

    chunks = list(chat.create(model="any", messages=messages, max_tokens=4, stream=True,
                              stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert finish.model_extra is not None and finish.model_extra["editcache"]["edit_id"] == edit["id"]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # the usage chunk comes last

    text = openai_client(server, namespace).completions.create(model="any", prompt=PROMPT, max_tokens=4)
    assert text.choices[0].text.split()[0] == "rome"
    assert text.model_extra is not None and text.model_extra["editcache"]["route"] == "counterfactual"


def test_an_unrelated_prompt_gets_the_base_models_exact_tokens(server: LocalServer) -> None:
    namespace = fresh_namespace()
    add_edit(server, namespace)
    six = GenerationOptions(max_new_tokens=6)
    with grpc_client(server, namespace) as client:
        base = client.generate(UNRELATED, options=six, route="base")
        base_chat = client.chat([ChatTurn("user", UNRELATED)], options=six, route="base")
        base_reply = "".join(base_chat)
    completions = openai_client(server, namespace).completions
    text = completions.create(model="any", prompt=UNRELATED, max_tokens=6)
    assert text.model_extra is not None and text.model_extra["editcache"]["route"] == "base"
    assert text.choices[0].text == base.text and text.usage is not None
    assert text.usage.completion_tokens == len(base.token_ids)
    streamed = completions.create(model="any", prompt=UNRELATED, max_tokens=6, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == base.text

    chat = openai_client(server, namespace).chat.completions.create(
        model="any", messages=[{"role": "user", "content": UNRELATED}], max_tokens=6)
    assert chat.choices[0].message.content == base_reply
    assert chat.model_extra is not None and chat.model_extra["editcache"]["route"] == "base"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 2}, "n must be 1"),
        ({"max_tokens": 100_000}, "max_new_tokens must be in [1, 512]"),
        ({"messages": []}, "turns is empty"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "turns[0].role"),
        ({"top_p": 0}, "top_p"),
        ({"stream": True, "max_tokens": 0}, "max_tokens must be at least 1"),  # before the stream starts
        ({"stream": True, "max_completion_tokens": 10**6}, "max_new_tokens"),
    ],
)
def test_bad_requests_get_400_with_an_openai_error_object(
    server: LocalServer, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"model": "any", "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        result = openai_client(server, fresh_namespace()).chat.completions.create(**arguments)
        list(result)  # type: ignore[call-overload]
    assert caught.value.status_code == 400 and message in caught.value.message
    assert caught.value.code in ("invalid_argument", "failed_precondition")
    assert caught.value.type == "invalid_request_error"


def test_a_malformed_body_names_the_field(server: LocalServer) -> None:
    reply = http(server, "POST", "/v1/chat/completions", "default", json={"messages": [{"content": "hi"}]})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "messages[0].role"
    reply = http(server, "POST", "/v1/chat/completions", "bad namespace!",
                 json={"messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 400 and "namespace 'bad namespace!' is invalid" in reply.json()["error"]["message"]


def test_tokens_and_roles_are_the_grpc_ones(server: LocalServer) -> None:
    body: Any = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(server, "http-read", token="wrong").chat.completions.create(model="any", **body)
    assert caught.value.status_code == 401 and caught.value.code == "unauthenticated"
    assert http(server, "GET", "/v1/edits", "http-read", token=None).status_code == 401

    reader = TOKENS["reader"][0]
    assert openai_client(server, "http-read", reader).chat.completions.create(model="any", **body).choices
    with pytest.raises(openai.PermissionDeniedError) as denied:  # another namespace
        openai_client(server, "other", reader).chat.completions.create(model="any", **body)
    assert "does not grant namespace 'other'" in denied.value.message
    written = http(server, "POST", "/v1/edits", "http-read", reader,  # a role too low
                   json={"edits": [{"subject": "france", "prompt": PROMPT, "target_new": "rome"}]})
    assert written.status_code == 403 and "AddEdits needs write" in written.json()["error"]["message"]


def test_corrections_and_edits_mirror_the_edit_service(server: LocalServer) -> None:
    namespace = fresh_namespace()
    correction = {"question": QUESTION, "answer": "paris",
                  "edit": {"subject": "france", "prompt": PROMPT, "target_new": "rome"}}
    dry = http(server, "POST", "/v1/corrections", namespace, json={**correction, "dry_run": True}).json()
    assert dry["stored"] is False and dry["edit"]["id"] is None and dry["edit"]["paraphrases"] == [QUESTION]
    assert http(server, "GET", "/v1/edits", namespace).json()["total"] == 0

    stored = http(server, "POST", "/v1/corrections", namespace, json=correction).json()
    edit_id = stored["edit"]["id"]
    assert stored["stored"] is True and edit_id
    listed = http(server, "GET", "/v1/edits", namespace).json()
    assert listed["total"] == 1 and [e["id"] for e in listed["data"]] == [edit_id]
    with grpc_client(server, namespace) as client:  # one store behind both front ends
        assert client.get_edit(edit_id).target_new == "rome"
    assert http(server, "GET", f"/v1/edits/{edit_id}", namespace).json()["prompt"] == PROMPT

    deleted = http(server, "DELETE", f"/v1/edits/{edit_id}", namespace).json()
    assert deleted["id"] == edit_id and deleted["deleted"] is True
    missing = http(server, "GET", f"/v1/edits/{edit_id}", namespace)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    both = http(server, "POST", "/v1/corrections", namespace, json={**correction, "text": "no, rome"})
    assert both.status_code == 400 and "not both" in both.json()["error"]["message"]


def test_update_and_history_after_a_supersede_mirror_the_edit_service(server: LocalServer) -> None:
    namespace = fresh_namespace()
    old = add_edit(server, namespace)
    assert (old["kind"], old["version"], old["supersedes"], old["superseded_by"]) == ("modify", 1, None, None)
    assert (old["pattern"], old["replacement"], old["updated_at"]) == ("", "", old["created_at"])
    new = add_edit(server, namespace, "berlin")  # the same fact: supersedes
    assert new["supersedes"] == old["id"]
    assert http(server, "GET", f"/v1/edits/{old['id']}", namespace).json()["superseded_by"] == new["id"]

    reply = http(server, "PUT", f"/v1/edits/{new['id']}", namespace,
                 json={"subject": "france", "prompt": PROMPT, "target_new": "madrid", "paraphrases": [QUESTION]})
    assert reply.status_code == 200, reply.text
    updated = reply.json()
    assert (updated["id"], updated["version"], updated["target_new"]) == (new["id"], 2, "madrid")
    assert updated["paraphrases"] == [QUESTION] and updated["supersedes"] == old["id"]
    assert updated["created_at"] == new["created_at"] and updated["updated_at"] >= new["updated_at"]

    plain = http(server, "GET", f"/v1/edits/{new['id']}", namespace).json()
    assert plain["version"] == 2 and "history" not in plain
    edit = http(server, "GET", f"/v1/edits/{new['id']}?history=true", namespace).json()
    assert edit["target_new"] == "madrid"
    history = [(e["id"], e["version"], e["target_new"]) for e in edit["history"]]
    assert history == [(new["id"], 1, "berlin"), (old["id"], 1, "rome")]
    with grpc_client(server, namespace) as client:  # the same history as GetEdit's
        record = client.get_edit(new["id"], history=True)
        assert [(e.id, e.version, e.target_new) for e in record.history] == history

    deleted = http(server, "DELETE", f"/v1/edits/{new['id']}", namespace).json()
    assert deleted["deleted"] is True and deleted["restored"]["id"] == old["id"]
    assert deleted["restored"]["superseded_by"] is None
    missing = http(server, "PUT", f"/v1/edits/{new['id']}", namespace,
                   json={"subject": "france", "prompt": PROMPT, "target_new": "oslo"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_audit_log_is_paged_and_filtered_for_admins(server: LocalServer) -> None:
    namespace = fresh_namespace()
    first = add_edit(server, namespace)
    body = {"subject": "france", "prompt": PROMPT, "target_new": "madrid"}
    assert http(server, "PUT", f"/v1/edits/{first['id']}", namespace, json=body).status_code == 200
    second = add_edit(server, namespace, "vienna", "austria", "the capital of austria is")

    admin = TOKENS["admin"][0]
    reply = http(server, "GET", "/v1/events?page_size=2", namespace, admin)
    assert reply.status_code == 200, reply.text
    page = reply.json()
    assert [(e["action"], e["edit_id"], e["token_name"]) for e in page["data"]] == [
        ("add", first["id"], "writer"), ("update", first["id"], "writer")]
    last = http(server, "GET", f"/v1/events?page_size=2&page_token={page['next_page_token']}", namespace, admin)
    assert [(e["action"], e["edit_id"]) for e in last.json()["data"]] == [("add", second["id"])]
    assert last.json()["next_page_token"] is None

    (added, update) = http(server, "GET", f"/v1/events?edit_id={first['id']}", namespace, admin).json()["data"]
    assert added["before"] is None and added["after"]["target_new"] == "rome"
    assert (update["before"]["target_new"], update["after"]["target_new"]) == ("rome", "madrid")
    assert update["namespace"] == namespace and update["seq"] > added["seq"] and update["at"] >= added["at"]

    refused = http(server, "GET", "/v1/events", namespace)  # the writer's token
    assert refused.status_code == 403 and "ListEditEvents needs admin" in refused.json()["error"]["message"]
    negative = http(server, "GET", "/v1/events?page_size=-1", namespace, admin)
    assert negative.status_code == 400 and negative.json()["error"]["param"] == "page_size"


def test_a_read_token_cannot_update(server: LocalServer) -> None:
    edit = add_edit(server, "http-read")  # the writer's token covers every namespace
    body = {"subject": "france", "prompt": PROMPT, "target_new": "madrid"}
    refused = http(server, "PUT", f"/v1/edits/{edit['id']}", "http-read", TOKENS["reader"][0], json=body)
    assert refused.status_code == 403 and "UpdateEdit needs write" in refused.json()["error"]["message"]
    assert http(server, "GET", f"/v1/edits/{edit['id']}?history=true", "http-read",
                TOKENS["reader"][0]).json()["history"] == []  # reading it, history included, is allowed
    http(server, "DELETE", f"/v1/edits/{edit['id']}", "http-read")


def test_a_regex_patch_added_over_http_rewrites_the_answers_of_its_namespace(server: LocalServer) -> None:
    namespace = fresh_namespace()
    six = GenerationOptions(max_new_tokens=6)
    with grpc_client(server, namespace) as client:
        base = client.generate(UNRELATED, options=six, route="base").text
    assert base.split(), "the tiny model's continuation must have a word to patch"
    pattern = re.escape(base.split()[0])
    reply = http(server, "POST", "/v1/edits", namespace,
                 json={"edits": [{"kind": "regex", "pattern": pattern, "replacement": "ZZ", "subject": "label"}]})
    assert reply.status_code == 200, reply.text
    (patch,) = reply.json()["data"]
    assert (patch["kind"], patch["pattern"], patch["replacement"], patch["prompt"]) == ("regex", pattern, "ZZ", "")

    completions = openai_client(server, namespace).completions
    assert completions.create(model="any", prompt=UNRELATED, max_tokens=6).choices[0].text == re.sub(
        pattern, "ZZ", base)
    other = openai_client(server, fresh_namespace()).completions
    assert other.create(model="any", prompt=UNRELATED, max_tokens=6).choices[0].text == base


@pytest.mark.parametrize(
    ("method", "edit", "param", "message"),
    [
        ("POST", {"subject": "france", "prompt": PROMPT, "target_new": "rome", "kind": "rewrite"}, "edits[0].kind",
         "'modify'"),
        ("POST", {"subject": "france", "prompt": PROMPT, "target_new": "rome", "kind": "erase"}, None,
         "edits[0].target_new must be empty for a erase edit"),
        ("POST", {"kind": "regex", "pattern": "(", "replacement": "x"}, None,
         "edits[0].pattern '(' is not a valid regular expression"),
        ("PUT", {"subject": "france", "prompt": PROMPT, "target_new": "rome", "kind": "MODIFY"}, "kind", "'modify'"),
        ("PUT", {"subject": "france", "prompt": PROMPT, "target_new": "rome", "pattern": "x"}, None,
         "edit.pattern must be empty"),
    ],
)
def test_bad_kinds_and_fields_get_400_naming_the_field(
    server: LocalServer, method: str, edit: dict[str, Any], param: str | None, message: str
) -> None:
    namespace = fresh_namespace()
    if method == "POST":
        reply = http(server, "POST", "/v1/edits", namespace, json={"edits": [edit]})
    else:
        reply = http(server, "PUT", f"/v1/edits/{add_edit(server, namespace)['id']}", namespace, json=edit)
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["code"] == "invalid_argument", reply.text
    assert error["param"] == param and message in error["message"]
    if param is not None:
        assert error["message"].startswith(f"{param}: ")


def test_multihop_mirrors_answer_multihop(server: LocalServer) -> None:
    namespace = fresh_namespace()
    edit = add_edit(server, namespace)
    body = {"question": "what is the capital of the capital of france", "steps": [PROMPT, "the capital of #1 is"]}
    reply = http(server, "POST", "/v1/multihop", namespace, json=body)
    assert reply.status_code == 200, reply.text
    chain = reply.json()
    first, second = chain["hops"]
    assert (first["question"], first["answer"], first["edit_id"]) == (PROMPT, "rome", edit["id"])
    assert second["question"] == "the capital of rome is"
    assert chain["plan"] == body["steps"] and chain["edit_ids"][0] == edit["id"]
    with grpc_client(server, namespace) as client:  # the same chain over gRPC
        over_grpc = client.answer_multihop(body["question"], steps=body["steps"])
    assert [(h.question, h.answer, h.route, h.edit_id, list(h.related_edit_ids)) for h in over_grpc.hops] == [
        (h["question"], h["answer"], h["route"], h["edit_id"], h["related_edit_ids"]) for h in chain["hops"]]

    bad = http(server, "POST", "/v1/multihop", namespace, json={"question": "q", "steps": ["#2 of"]})
    assert bad.status_code == 400 and "steps[0] refers to #2" in bad.json()["error"]["message"]
    unknown = http(server, "POST", "/v1/multihop", namespace, json={"question": "q", "hops": []})
    assert unknown.status_code == 400
    denied = http(server, "POST", "/v1/multihop", "other", TOKENS["reader"][0], json=body)
    assert denied.status_code == 403
