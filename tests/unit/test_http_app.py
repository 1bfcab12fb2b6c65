"""The HTTP app in process, before any model is loaded: errors are OpenAI error objects, the page is served."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.auth.authorizer import Authorizer
from server.auth.roles import Role
from server.auth.tokens import TokenEntry, hash_token
from server.http.app import create_app
from server.service import ServiceHolder


def test_while_loading_every_answer_is_503_with_an_openai_error_object() -> None:
    client = TestClient(create_app(ServiceHolder(), Authorizer(None)))
    reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    assert reply.json()["error"] == {"message": reply.json()["error"]["message"], "type": "server_error",
                                     "param": None, "code": "unavailable"}
    assert "still loading" in reply.json()["error"]["message"]
    assert client.get("/v1/edits").status_code == 503


def test_an_unauthenticated_caller_learns_nothing_not_even_that_it_is_loading() -> None:
    entry = TokenEntry("a", hash_token("secret"), ("team",), Role.READ)
    client = TestClient(create_app(ServiceHolder(), Authorizer([entry])))
    reply = client.get("/v1/models")
    assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/models", headers={"Authorization": "Bearer secret"}).status_code == 503


def test_the_page_is_at_the_root_and_unknown_paths_are_404_error_objects() -> None:
    client = TestClient(create_app(ServiceHolder(), Authorizer(None)))
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_mounts_join_the_app_before_the_page() -> None:
    async def metrics(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"up 1\n"})  # type: ignore[operator]

    client = TestClient(create_app(ServiceHolder(), Authorizer(None), mounts={"/metrics": metrics}))
    assert client.get("/metrics/").text == "up 1\n"
