"""ChatService over real gRPC on the tiny model: streamed chat turns through the gate, corrections as edits."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
import torch
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from transformers import AutoModelForCausalLM, AutoTokenizer

from client import (
    ChatResult,
    ChatTurn,
    EditcacheClient,
    EditInput,
    FailedPrecondition,
    GenerationOptions,
    InvalidArgument,
)
from client.launch import LocalServer
from editcache.v1 import chat_pb2 as chat_pb
from editcache.v1 import chat_pb2_grpc as chat_pb_grpc
from server.chat.transcript import PlainFormat, Turn

QUESTION = "what is the capital of france"
PROMPT = "the capital of france is"
UNRELATED = "who speaks german in berlin"


def fresh_namespace() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def ask(client: EditcacheClient, *turns: tuple[str, str], max_new_tokens: int = 6) -> tuple[str, ChatResult]:
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    stream = client.chat([ChatTurn(role, content) for role, content in turns], options=options)
    text = "".join(stream)
    assert stream.result is not None
    return text, stream.result


def test_chat_service_is_in_health_and_reflection(running_server: LocalServer) -> None:
    with running_server.client() as client:
        assert client.health("editcache.v1.ChatService") == "SERVING"
    with grpc.insecure_channel(running_server.addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    assert "editcache.v1.ChatService" in {s.name for s in reply.list_services_response.service}


def test_chat_streams_the_base_models_continuation_of_the_transcript(
    running_server: LocalServer, tiny_model_dir: Path
) -> None:
    turns = (("user", "where is paris"), ("assistant", "paris is in france ."), ("user", UNRELATED))
    with running_server.client(fresh_namespace()) as client:
        text, result = ask(client, *turns, max_new_tokens=8)
    assert result.route == "base" and result.edit is None and result.edit_id is None
    assert text == result.reply == result.generation.text.strip()  # the tiny vocabulary has no turn markers
    assert result.gate_query == UNRELATED
    expected_prompt = PlainFormat().render([Turn(r, c) for r, c in turns]).text
    assert result.prompt == expected_prompt

    # Out of scope, the answer is the unedited model's own continuation of the transcript, token for token.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    inputs = tokenizer(expected_prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert list(result.generation.token_ids) == out[0, inputs["input_ids"].shape[1]:].tolist()


def test_structured_correction_holds_from_the_next_turn(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        _, before = ask(client, ("user", QUESTION))
        assert before.route == "base"
        correction = client.correct(QUESTION, before.reply, edit=EditInput("france", PROMPT, "rome"))
        assert correction.stored and correction.extraction == ()
        edit = correction.edit
        assert (edit.subject, edit.prompt, edit.target_new) == ("france", PROMPT, "rome")
        assert edit.paraphrases == (QUESTION,)  # so the gate catches the same question next turn
        assert [e.id for e in client.iter_edits()] == [edit.id]

        _, after = ask(client, ("user", QUESTION), ("assistant", before.reply), ("user", QUESTION))
        assert (after.route, after.edit_id) == ("ike", edit.id)
        assert after.edit is not None and after.edit.target_new == "rome"
        assert after.gate_score >= client.server_info().threshold


def test_a_correction_in_one_namespace_never_changes_answers_in_another(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as a, running_server.client(fresh_namespace()) as b:
        _, before = ask(b, ("user", QUESTION), max_new_tokens=8)
        edit = a.correct(QUESTION, "paris", edit=EditInput("france", PROMPT, "rome")).edit
        _, in_a = ask(a, ("user", QUESTION), max_new_tokens=8)
        assert in_a.edit_id == edit.id
        _, after = ask(b, ("user", QUESTION), max_new_tokens=8)
        assert before.route == after.route == "base"
        assert after.generation.token_ids == before.generation.token_ids
        assert b.list_edits().total == 0


def test_dry_run_returns_the_edit_without_storing_it(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        correction = client.correct(QUESTION, "paris", edit=EditInput("france", PROMPT, "rome"), dry_run=True)
        assert not correction.stored and correction.edit.id == ""
        assert correction.edit.target_new == "rome"
        assert client.list_edits().total == 0


@pytest.mark.parametrize("text", ["No, that's wrong.", "nope", "That is not correct!"])
def test_a_correction_that_does_not_say_what_is_right_is_failed_precondition(
    running_server: LocalServer, text: str
) -> None:
    with running_server.client(fresh_namespace()) as client:
        with pytest.raises(FailedPrecondition) as caught:
            client.correct(QUESTION, "paris", text)
        assert "does not say what the right answer is" in caught.value.details
        assert client.list_edits().total == 0


def test_free_text_on_the_tiny_model_stores_a_valid_edit_or_says_what_is_missing(running_server: LocalServer) -> None:
    # Random weights cannot read the correction; whatever they write, no invalid edit may be stored.
    with running_server.client(fresh_namespace()) as client:
        try:
            correction = client.correct(QUESTION, "paris", "no , it is rome")
        except FailedPrecondition as exc:
            assert "send subject, prompt and target_new" in exc.details
            assert client.list_edits().total == 0
        else:
            edit = correction.edit
            assert edit.subject in QUESTION and edit.subject in edit.prompt and edit.target_new in "no , it is rome"
            assert len(correction.extraction) >= 2


LONG = "x " * 5000
BAD_CHATS = [
    ([], "turns is empty"),
    ([("robot", "hi")], "turns[0].role"),
    ([("user", "hi"), ("assistant", "hello")], "the last turn must be the user's"),
    ([("user", "hi"), ("system", "be brief"), ("user", "hi")], "turns[1] is a system turn"),
    ([("user", "   ")], "turns[0].content"),
    ([("user", "hi")] * 65, "turns has 65 entries"),
    ([("user", LONG)], "turns[0].content"),
]


@pytest.mark.parametrize(("turns", "message"), BAD_CHATS)
def test_bad_chats_get_invalid_argument_saying_what_to_fix(
    running_server: LocalServer, turns: list[tuple[str, str]], message: str
) -> None:
    with running_server.client(fresh_namespace()) as client:
        with pytest.raises(InvalidArgument) as caught:
            ask(client, *turns)
        assert message in caught.value.details
        assert client.health() == "SERVING"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.chat([ChatTurn("user", "hi")], options=GenerationOptions(max_new_tokens=100_000)),
         "max_new_tokens"),
        (lambda c: c.chat([ChatTurn("user", "hi")], namespace="bad namespace!"), "namespace"),
        (lambda c: c.correct("", "paris", "no, rome"), "question"),
        (lambda c: c.correct(QUESTION, "paris", "x" * 3000), "text"),
        (lambda c: c.correct(QUESTION, "paris", edit=EditInput("spain", PROMPT, "rome")), "edit.subject"),
        (lambda c: c.correct(QUESTION, "paris", edit=EditInput("france", PROMPT, " ")), "edit.target_new"),
    ],
)
def test_bad_calls_get_invalid_argument_naming_the_field(
    running_server: LocalServer, call: object, message: str
) -> None:
    with running_server.client(fresh_namespace()) as client:
        with pytest.raises(InvalidArgument) as caught:
            result = call(client)  # type: ignore[operator]
            if hasattr(result, "__iter__"):
                list(result)  # a stream fails when read
        assert message in caught.value.details


def test_a_correction_without_text_or_edit_is_invalid_argument(running_server: LocalServer) -> None:
    with grpc.insecure_channel(running_server.addr) as channel:
        stub = chat_pb_grpc.ChatServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Correct(chat_pb.CorrectRequest(namespace="x", question=QUESTION, answer="paris"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "correction is missing" in caught.value.details()
