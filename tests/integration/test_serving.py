"""The real gRPC server (tiny model, real MiniLM encoder) driven through the real client."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
import torch
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from transformers import AutoModelForCausalLM, AutoTokenizer

from client import EditcacheClient, EditInput, FailedPrecondition, GenerationOptions, InvalidArgument, NotFound
from client.editctl import main as editctl
from client.launch import LocalServer
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from server.models.fingerprint import weights_digest
from tests.crash import kill

PROMPT = "the capital of france is"
UNRELATED = "who speaks german in berlin"


def fresh_namespace() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def test_health_and_reflection(running_server: LocalServer) -> None:
    with running_server.client() as client:
        assert client.health() == "SERVING"
        assert client.health("editcache.v1.InferenceService") == "SERVING"
    with grpc.insecure_channel(running_server.addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in reply.list_services_response.service}
    assert {"editcache.v1.EditService", "editcache.v1.InferenceService", "grpc.health.v1.Health"} <= names


def test_edit_lifecycle(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        added = client.add_edits(
            [EditInput("france", PROMPT, "rome", target_true="paris", paraphrases=("france has the capital",)),
             EditInput("germany", "the capital of germany is", "madrid")]
        )
        assert [e.target_new for e in added] == ["rome", "madrid"]
        first = client.get_edit(added[0].id)
        assert (first.subject, first.target_true, first.paraphrases) == ("france", "paris", ("france has the capital",))

        page = client.list_edits(page_size=1)
        assert page.total == 2 and [e.id for e in page.edits] == [added[0].id] and page.next_page_token
        rest = client.list_edits(page_size=1, page_token=page.next_page_token)
        assert [e.id for e in rest.edits] == [added[1].id] and rest.next_page_token == ""

        assert client.delete_edit(added[0].id).id == added[0].id
        with pytest.raises(NotFound):
            client.get_edit(added[0].id)
        assert [e.id for e in client.iter_edits()] == [added[1].id]


def test_out_of_scope_answer_is_the_base_model_token_for_token(
    running_server: LocalServer, tiny_model_dir: object
) -> None:
    with running_server.client(fresh_namespace()) as client:
        client.add_edit("france", PROMPT, "rome")
        answer = client.generate(UNRELATED, options=GenerationOptions(max_new_tokens=12))
    assert answer.route == "base" and answer.edit_id is None

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    inputs = tokenizer(UNRELATED, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert list(answer.token_ids) == out[0, inputs["input_ids"].shape[1]:].tolist()


def test_in_scope_query_is_answered_from_the_edit(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        edit = client.add_edit("france", PROMPT, "rome")
        answer = client.generate(PROMPT, options=GenerationOptions(max_new_tokens=4))
        threshold = client.server_info().threshold
    assert answer.route == "ike" and answer.edit_id == edit.id  # IKE is the in-scope route when it is on
    assert threshold <= answer.gate_score <= 1.0
    assert answer.timings_ms["total"] >= answer.timings_ms["generate"] > 0


def test_stream_deltas_add_up_to_the_final_text(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        stream = client.stream(UNRELATED, options=GenerationOptions(max_new_tokens=10))
        text = "".join(stream)
        unary = client.generate(UNRELATED, options=GenerationOptions(max_new_tokens=10))
    assert stream.result is not None
    assert text == stream.result.text == unary.text
    assert stream.result.token_ids == unary.token_ids


def test_namespaces_are_isolated(running_server: LocalServer) -> None:
    a, b = fresh_namespace(), fresh_namespace()
    with running_server.client(a) as client_a, running_server.client(b) as client_b:
        edit = client_a.add_edit("france", PROMPT, "rome")
        assert client_a.generate(PROMPT, options=GenerationOptions(max_new_tokens=2)).route == "ike"
        answer_b = client_b.generate(PROMPT, options=GenerationOptions(max_new_tokens=2))
        assert answer_b.route == "base" and answer_b.edit_id is None
        assert client_b.list_edits().total == 0
        with pytest.raises(NotFound):
            client_b.get_edit(edit.id)
        with pytest.raises(NotFound):
            client_b.delete_edit(edit.id)
        assert client_a.get_edit(edit.id).id == edit.id


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.add_edits([]), "edits"),
        (lambda c: c.add_edit("", PROMPT, "rome"), "edits[0].subject"),
        (lambda c: c.add_edit("spain", PROMPT, "rome"), "does not occur in prompt"),
        (lambda c: c.add_edit("france", PROMPT, "   "), "edits[0].target_new"),
        (lambda c: c.add_edit("france", PROMPT, "x" * 5000), "edits[0].target_new"),
        (lambda c: c.add_edit("france", PROMPT, "rome", namespace="bad namespace!"), "namespace"),
        (lambda c: c.generate(""), "prompt"),
        (lambda c: c.generate(PROMPT, options=GenerationOptions(max_new_tokens=100_000)), "max_new_tokens"),
        (lambda c: c.generate(PROMPT, options=GenerationOptions(temperature=-1.0)), "temperature"),
        (lambda c: c.generate(PROMPT, options=GenerationOptions(temperature=1.0, top_p=1.5)), "top_p"),
        (lambda c: c.get_edit("not-an-id"), "id"),
        (lambda c: c.list_edits(page_token="garbage"), "page_token"),
        (lambda c: c.list_edits(page_size=10**6), "page_size"),
    ],
)
def test_bad_input_gets_invalid_argument_naming_the_field(
    running_server: LocalServer, call: object, field: str
) -> None:
    with running_server.client(fresh_namespace()) as client:
        with pytest.raises(InvalidArgument) as caught:
            call(client)  # type: ignore[operator]
        assert field in caught.value.details
        assert client.health() == "SERVING"  # the server keeps serving


def test_unknown_id_is_not_found(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client, pytest.raises(NotFound) as caught:
        client.delete_edit(uuid.uuid4().hex)
    assert "no edit with id" in caught.value.details


def test_acknowledged_edit_survives_sigkill_and_restart(tiny_model_dir: object, tmp_path: object) -> None:
    server = LocalServer(tiny_model_dir, tmp_path)  # type: ignore[arg-type]
    server.start()
    with server.client("crash") as client:
        edit = client.add_edit("france", PROMPT, "rome")
    kill(server)  # right after AddEdits returned

    log_before_restart = len(server.log_text())
    server.start()
    try:
        with server.client("crash") as client:
            assert [e.id for e in client.iter_edits()] == [edit.id]
            answer = client.generate(PROMPT, options=GenerationOptions(max_new_tokens=2))
        assert answer.route == "ike" and answer.edit_id == edit.id
        assert "edit index rebuilt" in server.log_text()[log_before_restart:]  # index files were stale
    finally:
        assert server.stop() == 0


def test_clean_restart_loads_the_saved_index(tiny_model_dir: object, tmp_path: object) -> None:
    server = LocalServer(tiny_model_dir, tmp_path)  # type: ignore[arg-type]
    server.start()
    with server.client("restart") as client:
        edit = client.add_edit("france", PROMPT, "rome")
    assert server.stop() == 0
    log_before_restart = len(server.log_text())
    server.start()
    try:
        with server.client("restart") as client:
            assert client.generate(PROMPT, options=GenerationOptions(max_new_tokens=2)).edit_id == edit.id
        assert "edit index loaded" in server.log_text()[log_before_restart:]
    finally:
        server.stop()


def test_client_reaches_no_server_with_unavailable() -> None:
    from client import Unavailable

    with EditcacheClient("127.0.0.1:1", timeout_s=2) as client, pytest.raises(Unavailable):
        client.list_edits()


def test_teacher_forced_greedy_continuation_is_all_argmax(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        greedy = client.generate(UNRELATED, options=GenerationOptions(max_new_tokens=6), route="base")
        scores = client.score(UNRELATED, " " + greedy.text.strip())
    assert scores.route == "base"
    assert scores.target_ids == greedy.token_ids  # word-level tokenizer: the text re-tokenises the same
    assert scores.predicted_ids == scores.target_ids and scores.token_accuracy == 1.0
    assert all(lp <= 0.0 for lp in scores.target_logprobs)


def test_a_request_can_force_its_route(running_server: LocalServer) -> None:
    with running_server.client(fresh_namespace()) as client:
        edit = client.add_edit("france", PROMPT, "rome")
        two = GenerationOptions(max_new_tokens=2)
        assert client.generate(PROMPT, options=two, route="base").route == "base"
        forced = client.generate(UNRELATED, options=two, route="prompt", edit_id=edit.id)
        assert (forced.route, forced.edit_id) == ("prompt", edit.id)
        best = client.score(UNRELATED, " rome", route="prompt")  # no edit named: the best retrieved one
        assert (best.route, best.edit_id) == ("prompt", edit.id)
        ike = client.generate(PROMPT, options=two, route="ike", edit_id=edit.id)
        assert (ike.route, ike.edit_id) == ("ike", edit.id)
        with pytest.raises(FailedPrecondition):
            client.generate(PROMPT, route="counterfactual")  # no counterfactual model is served


def test_unknown_route_value_is_invalid_argument(running_server: LocalServer) -> None:
    with grpc.insecure_channel(running_server.addr) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(pb.GenerateRequest(namespace="x", prompt=PROMPT, route=99))  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "route" in caught.value.details()


def test_server_info_describes_the_served_model(
    running_server: LocalServer, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_server.client() as client:
        info = client.server_info()
    assert info.model_type == "llama" and info.parameters > 0
    assert {"base", "prompt", "ike"} <= set(info.routes) and info.in_scope_route == "ike"
    assert info.encoder == "all-MiniLM-L6-v2" and 0 < info.threshold <= 1 and info.gate == "classifier"
    assert info.model_fingerprint == f"{tiny_model_dir.name}-{weights_digest(tiny_model_dir)[:12]}"
    # The tiny model has no counterfactual adapter: the server says which route answers instead, and why,
    # in GetServerInfo, in editctl info and in one plain line of its output.
    (sentence,) = info.degraded
    assert sentence.startswith("in-scope queries are answered by the ike route") and "no adapter" in sentence
    assert f"editcache-server: degraded start: {sentence}" in running_server.log_text()
    assert editctl(["info", "--addr", running_server.addr]) == 0
    shown = capsys.readouterr().out
    assert f"fingerprint    {info.model_fingerprint}" in shown and "in-scope route ike" in shown
    assert f"degraded       {sentence}" in shown


def test_without_ike_in_scope_queries_take_the_prompt_route(tiny_model_dir: object, tmp_path: object) -> None:
    server = LocalServer(tiny_model_dir, tmp_path, "--ike-k", "0")  # type: ignore[arg-type]
    server.start()
    try:
        with server.client("no-ike") as client:
            edit = client.add_edit("france", PROMPT, "rome")
            answer = client.generate(PROMPT, options=GenerationOptions(max_new_tokens=2))
            info = client.server_info()
        assert (answer.route, answer.edit_id) == ("prompt", edit.id)
        assert info.in_scope_route == "prompt" and "ike" not in info.routes
    finally:
        server.stop()
