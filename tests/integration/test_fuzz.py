"""Random and malformed requests to every RPC through raw stubs: the right status code, and the server lives on.

Client errors are INVALID_ARGUMENT (malformed field), NOT_FOUND (unknown id) or FAILED_PRECONDITION (a route
this server lacks). A message that is not valid protobuf at all (a string field with invalid UTF-8) is
rejected by grpc's own parser before any editcache code runs: grpc python answers UNKNOWN with
"Error parsing message ... bad UTF-8" and the server keeps serving.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.launch import LocalServer
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from editcache.v1 import parametric_pb2 as ppb
from editcache.v1 import parametric_pb2_grpc as ppb_grpc

CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
# derandomize: CI sees the same examples every run, so a failure reproduces.
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

texts = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),  # protobuf cannot carry lone surrogates
    st.just(""), st.just("   "), st.just("a\x00b"), st.just("x" * 9000),
)
namespaces = st.one_of(st.just("fuzz"), texts)
ids = st.one_of(texts, st.just(uuid.uuid4().hex), st.text("0123456789abcdef", min_size=32, max_size=32))
uint32 = st.one_of(st.integers(0, 3), st.integers(0, 2**32 - 1))
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
routes = st.integers(0, 2**31 - 1)
# Parametric options as float32 carries them: NaN, ±inf, subnormals, zero, the largest finite, and the rest.
option_floats = st.one_of(
    st.none(), st.floats(width=32), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, 3.4e38]),
    st.floats(min_value=0.0, max_value=2.0**-126, width=32),  # zero, the subnormals and the smallest normal
)
export_paths = st.one_of(
    texts, st.sampled_from(["..", "../x", "a/../b", "/", ".", "/etc", "/proc/self/mem", "//x", "a//b", "x" * 300]),
    st.text(st.sampled_from("./ab\x00~"), max_size=12),
)
OPTION_RANGES = {"lr": 10.0, "mom2_weight": 1e8, "norm_constraint": 1.0, "null_space_cutoff": 1.0}  # README


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = LocalServer(tiny_model_dir, tmp_path_factory.mktemp("fuzz-data"), "--gate", "similarity")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channel(server: LocalServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.addr) as channel:
        yield channel


def outcome(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return, attr-defined]
    return grpc.StatusCode.OK


def assert_serving(channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- every RPC with random fields: OK or a client error, never INTERNAL/UNKNOWN ---------------------------


@FUZZ
@given(namespace=namespaces, subject=texts, prompt=texts, target=texts, paraphrases=st.lists(texts, max_size=3),
       n=st.integers(0, 3))
def test_add_edits(channel: grpc.Channel, namespace: str, subject: str, prompt: str, target: str,
                   paraphrases: list[str], n: int) -> None:
    spec = pb.EditSpec(subject=subject, prompt=prompt, target_new=target, paraphrases=paraphrases)
    code = outcome(lambda: pb_grpc.EditServiceStub(channel).AddEdits(
        pb.AddEditsRequest(namespace=namespace, edits=[spec] * n), timeout=30))
    assert code in CLIENT_ERRORS | {grpc.StatusCode.OK}
    if n == 0 or not prompt.strip() or subject not in prompt:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert_serving(channel)


@FUZZ
@given(namespace=namespaces, edit_id=ids)
def test_get_and_delete_edit(channel: grpc.Channel, namespace: str, edit_id: str) -> None:
    stub = pb_grpc.EditServiceStub(channel)
    for call in (stub.GetEdit, stub.DeleteEdit):
        code = outcome(lambda call=call: call(pb.GetEditRequest(namespace=namespace, id=edit_id), timeout=30))
        # No edit is ever stored under these ids: malformed ones are INVALID_ARGUMENT, well-formed ones NOT_FOUND.
        assert code in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    assert_serving(channel)


@FUZZ
@given(namespace=namespaces, page_size=uint32, page_token=texts)
def test_list_edits(channel: grpc.Channel, namespace: str, page_size: int, page_token: str) -> None:
    code = outcome(lambda: pb_grpc.EditServiceStub(channel).ListEdits(
        pb.ListEditsRequest(namespace=namespace, page_size=page_size, page_token=page_token), timeout=30))
    assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, (code, namespace, page_size, page_token)
    if page_size > 1000:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert_serving(channel)


@FUZZ
@given(namespace=namespaces, prompt=texts, max_new_tokens=st.one_of(st.integers(0, 3), st.integers(513, 2**32 - 1)),
       temperature=floats, top_p=floats, stop=st.lists(texts, max_size=10), route=routes, edit_id=ids,
       stream=st.booleans())
def test_generate(channel: grpc.Channel, namespace: str, prompt: str, max_new_tokens: int, temperature: float,
                  top_p: float, stop: list[str], route: int, edit_id: str, stream: bool) -> None:
    request = pb.GenerateRequest(
        namespace=namespace, prompt=prompt, route=route, edit_id=edit_id,  # type: ignore[arg-type]
        options=pb.GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop))
    stub = pb_grpc.InferenceServiceStub(channel)
    if stream:
        code = outcome(lambda: list(stub.GenerateStream(request, timeout=30)))
    else:
        code = outcome(lambda: stub.Generate(request, timeout=30))
    assert code in CLIENT_ERRORS | {grpc.StatusCode.OK}
    if route > max(pb.Route.values()) or max_new_tokens > 512 or not prompt.strip():
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert_serving(channel)


@FUZZ
@given(namespace=namespaces, prompt=texts, target=texts, route=routes, edit_id=ids)
def test_score(channel: grpc.Channel, namespace: str, prompt: str, target: str, route: int, edit_id: str) -> None:
    request = pb.ScoreRequest(namespace=namespace, prompt=prompt, target=target, route=route,  # type: ignore[arg-type]
                              edit_id=edit_id)
    code = outcome(lambda: pb_grpc.InferenceServiceStub(channel).Score(request, timeout=30))
    assert code in CLIENT_ERRORS | {grpc.StatusCode.OK}
    assert_serving(channel)


@pytest.fixture(scope="module")
def baked_edit_id(channel: grpc.Channel) -> str:
    """An edit already in the weights: options that pass validation then stop at FAILED_PRECONDITION ("already in
    the weights") before any computation, so every example is quick and the weights change only once."""
    spec = pb.EditSpec(subject="france", prompt="the capital of france is", target_new="rome")
    edit = pb_grpc.EditServiceStub(channel).AddEdits(pb.AddEditsRequest(namespace="fuzz", edits=[spec]), timeout=30)
    request = ppb.ApplyParametricRequest(namespace="fuzz", method=ppb.PARAMETRIC_METHOD_FT,
                                         edit_ids=[edit.edits[0].id])
    list(ppb_grpc.ParametricServiceStub(channel).ApplyParametric(request, timeout=120))
    return str(edit.edits[0].id)


@FUZZ
@given(method=st.integers(0, 5), layer=st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)),
       steps=st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)), lr=option_floats, mom2_weight=option_floats,
       norm_constraint=option_floats, null_space_cutoff=option_floats)
def test_apply_parametric_options(channel: grpc.Channel, baked_edit_id: str, method: int, layer: int | None,
                                  steps: int | None, lr: float | None, mom2_weight: float | None,
                                  norm_constraint: float | None, null_space_cutoff: float | None) -> None:
    floats = {"lr": lr, "mom2_weight": mom2_weight, "norm_constraint": norm_constraint,
              "null_space_cutoff": null_space_cutoff}
    options = ppb.ParametricOptions(layer=layer, steps=steps, **floats)  # type: ignore[arg-type]
    request = ppb.ApplyParametricRequest(namespace="fuzz", method=method, edit_ids=[baked_edit_id],  # type: ignore[arg-type]
                                         options=options)
    code = outcome(lambda: list(ppb_grpc.ParametricServiceStub(channel).ApplyParametric(request, timeout=30)))
    assert code in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}, (code, request)
    sent = {name: getattr(options, name) for name in floats if options.HasField(name)}  # as float32 rounded them
    if any(not (math.isfinite(v) and 0.0 < v <= OPTION_RANGES[name]) for name, v in sent.items()):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, sent)
    assert_serving(channel)


@FUZZ
@given(method=st.sampled_from([ppb.PARAMETRIC_METHOD_TPATCHER, ppb.PARAMETRIC_METHOD_CALINET]),
       fire_at=st.one_of(st.none(), st.sampled_from(["last", "subject", "Last", "subject "]), st.text(max_size=16)),
       memory_subjects=st.one_of(st.none(), st.integers(-2**31, 2**31 - 1), st.integers(-1, 300)),
       own_questions=st.one_of(st.none(), st.integers(-2**31, 2**31 - 1), st.integers(-1, 70)),
       own_tokens=st.one_of(st.none(), st.integers(-1, 70)))
def test_apply_parametric_neuron_options(channel: grpc.Channel, baked_edit_id: str, method: int, fire_at: str | None,
                                         memory_subjects: int | None, own_questions: int | None,
                                         own_tokens: int | None) -> None:
    options = ppb.ParametricOptions(fire_at=fire_at, memory_subjects=memory_subjects,
                                    own_subject_questions=own_questions, own_subject_tokens=own_tokens)
    request = ppb.ApplyParametricRequest(namespace="fuzz", method=method, edit_ids=[baked_edit_id],  # type: ignore[arg-type]
                                         options=options)
    code = outcome(lambda: list(ppb_grpc.ParametricServiceStub(channel).ApplyParametric(request, timeout=30)))
    bad_place = fire_at is not None and fire_at not in ("last", "subject")
    bad_count = memory_subjects is not None and not 0 <= memory_subjects <= 256
    bad_count |= any(n is not None and not 0 <= n <= 64 for n in (own_questions, own_tokens))
    empty_memory = fire_at == "subject" and memory_subjects == 0
    no_own_subject = fire_at == "subject" and bool(own_questions or own_tokens)
    expected = grpc.StatusCode.INVALID_ARGUMENT if bad_place or bad_count or empty_memory or no_own_subject else (
        grpc.StatusCode.FAILED_PRECONDITION)  # valid options stop at the edit already in the weights
    assert code == expected, (code, fire_at, memory_subjects, own_questions, own_tokens)
    assert_serving(channel)


@FUZZ
@given(path=export_paths)
def test_export_model_paths(channel: grpc.Channel, server: LocalServer, path: str) -> None:
    request = ppb.ExportModelRequest(path=path)
    try:
        reply = ppb_grpc.ParametricServiceStub(channel).ExportModel(request, timeout=60)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
    assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
    exports = (server.data_dir / "exports").resolve()
    if code == grpc.StatusCode.OK:
        assert Path(reply.path).is_relative_to(exports) and Path(reply.path) != exports, reply.path
    outside = path.startswith("/") and not path.startswith(str(exports))
    if "\x00" in path or ".." in PurePosixPath(path).parts or outside:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, code)
    assert_serving(channel)


def test_server_info_ignores_what_it_is_sent(channel: grpc.Channel) -> None:
    info = channel.unary_unary("/editcache.v1.InferenceService/GetServerInfo")(b"\x08\x01\x12\x00", timeout=10)
    assert pb.GetServerInfoResponse.FromString(info).model_type == "llama"  # unknown fields are skipped


# --- messages built by hand -----------------------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative numbers go over the wire as 10-byte two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


RAW_RPCS = {
    "EditService/AddEdits": field(1, b"fuzz") + field(2, field(1, b"\xff") + field(2, b"\xfe\xff") + field(3, b"x")),
    "EditService/GetEdit": field(1, b"fuzz") + field(2, b"\xc3\x28" * 16),
    "EditService/ListEdits": field(1, b"fuzz") + field(3, b"after:\xff"),
    "EditService/DeleteEdit": field(1, b"\xe2\x82") + field(2, b"0" * 32),
    "InferenceService/Generate": field(1, b"fuzz") + field(2, b"\xff\xfe\xfd"),
    "InferenceService/GenerateStream": field(1, b"fuzz") + field(2, b"\xed\xa0\x80"),  # an encoded surrogate
    "InferenceService/Score": field(1, b"fuzz") + field(2, b"ok") + field(3, b"\x80"),
}


@pytest.mark.parametrize("rpc", sorted(RAW_RPCS))
def test_invalid_utf8_is_rejected_by_the_parser_and_the_server_lives(channel: grpc.Channel, rpc: str) -> None:
    path = f"/editcache.v1.{rpc}"
    call = (channel.unary_stream if rpc.endswith("Stream") else channel.unary_unary)(path)
    with pytest.raises(grpc.RpcError) as caught:
        reply = call(RAW_RPCS[rpc], timeout=10)
        if rpc.endswith("Stream"):
            list(reply)  # type: ignore[call-overload]
    assert caught.value.code() == grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    assert "bad UTF-8" in caught.value.details()  # type: ignore[attr-defined]
    assert_serving(channel)


@pytest.mark.parametrize(("rpc", "body", "mentions"), [
    ("EditService/ListEdits", field(1, b"fuzz") + field(2, -1), "page_size"),  # negative into uint32: 2**32 - 1
    ("InferenceService/Generate", field(1, b"fuzz") + field(2, b"hi") + field(3, field(1, -5)), "max_new_tokens"),
    ("InferenceService/Generate", field(1, b"fuzz") + field(2, b"hi") + field(4, -1), "route"),  # enum: -1
    ("InferenceService/Score", field(1, b"fuzz") + field(2, b"hi") + field(3, b"x") + field(4, 77), "route"),
])
def test_negative_and_unknown_numbers_are_invalid_argument(
    channel: grpc.Channel, rpc: str, body: bytes, mentions: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/editcache.v1.{rpc}")(body, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert mentions in caught.value.details()  # type: ignore[attr-defined]
    assert_serving(channel)


@FUZZ
@given(body=st.binary(max_size=64))
def test_random_bytes_never_take_the_server_down(channel: grpc.Channel, body: bytes) -> None:
    code = outcome(lambda: channel.unary_unary("/editcache.v1.InferenceService/Generate")(body, timeout=30))
    # Unparseable bytes are UNKNOWN (grpc's parser); parseable ones reach validation.
    assert code in CLIENT_ERRORS | {grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN}
    assert_serving(channel)
