"""The OpenAI-compatible HTTP API, driven by the official `openai` client against a real server on a tiny model.

The server has a counterfactual adapter (so an edited prompt is answered with the edit's own words) and a tokens
file (so the same bearer tokens and roles as gRPC are in force); the namespace comes from X-Editcache-Namespace.
"""

from __future__ import annotations

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


def add_edit(server: LocalServer, namespace: str) -> dict[str, Any]:
    reply = http(server, "POST", "/v1/edits", namespace,
                 json={"edits": [{"subject": "france", "prompt": PROMPT, "target_new": "rome"}]})
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
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
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
