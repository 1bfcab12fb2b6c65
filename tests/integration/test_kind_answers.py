"""How each edit kind is answered, through the real gRPC server (tiny model): erase edits get the refusal, patches
are answered from their rule, and regex patches rewrite every answer of their namespace, streamed or whole, and
no other namespace's."""

from __future__ import annotations

import re
import uuid

from client import EditInput, GenerationOptions
from client.launch import LocalServer

PROMPT = "the capital of france is"
UNRELATED = "who speaks german in berlin"
SIX = GenerationOptions(max_new_tokens=6)


def fresh_namespace() -> str:
    return "k-" + uuid.uuid4().hex[:10]


def test_an_erased_fact_is_refused_and_the_rest_is_the_base_models(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        (erase,) = client.add_edits([EditInput("france", PROMPT, "", target_true="paris", kind="erase")])
        answer = client.generate(PROMPT, options=SIX)
        assert (answer.text, answer.edit_id) == (" I don't know.", erase.id)
        assert answer.route == client.server_info().in_scope_route
        assert "".join(client.stream(PROMPT, options=SIX)) == " I don't know."
        unrelated = client.generate(UNRELATED, options=SIX)
        assert unrelated.route == "base"
        assert unrelated.token_ids == client.generate(UNRELATED, options=SIX, route="base").token_ids


def test_a_patch_is_answered_from_its_rule(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        (patch,) = client.add_edits([EditInput("france", "If asked for the capital of france, say rome.", "",
                                               kind="patch")])
        for route in ("ike", "prompt"):
            answer = client.generate(PROMPT, options=SIX, route=route, edit_id=patch.id)
            assert (answer.route, answer.edit_id) == (route, patch.id)


def test_a_regex_patch_rewrites_its_namespace_only_streamed_or_whole(running_server: LocalServer) -> None:
    patched, other = fresh_namespace(), fresh_namespace()
    with running_server.client(patched) as client:
        original = client.generate(UNRELATED, options=SIX, namespace=other).text
        word = original.split()[0]  # whatever the random-weight model writes first
        client.add_edits([EditInput(subject="label", prompt="", target_new="", kind="regex",
                                    pattern=rf"\b{re.escape(word)}\b", replacement="ZZZ")])
        expected = re.sub(rf"\b{re.escape(word)}\b", "ZZZ", original)
        assert expected != original
        answer = client.generate(UNRELATED, options=SIX)
        assert (answer.text, answer.route) == (expected, "base")
        assert "".join(client.stream(UNRELATED, options=SIX)) == expected
        assert client.generate(UNRELATED, options=SIX, namespace=other).text == original
        listed = [e for e in client.iter_edits() if e.kind == "regex"]
        assert [e.replacement for e in listed] == ["ZZZ"]  # listed with the other edits
