from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import AsyncIterator

import grpc
import pytest

import server
from editcache.v1 import editcache_pb2 as pb
from server.auth.authorizer import Authorizer
from server.auth.roles import Role
from server.auth.tokens import TokenEntry, hash_token
from server.errors import EditcacheError, EditNotFound, InvalidArgument, ResourceExhausted, UnsupportedModel
from server.servicers.rpc import streaming, unary


def all_subclasses(cls: type[EditcacheError]) -> set[type[EditcacheError]]:
    found: set[type[EditcacheError]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def import_every_server_module() -> None:
    """So that error classes defined outside server/errors.py are subclasses by the time we walk them."""
    for info in pkgutil.walk_packages(server.__path__, prefix="server."):
        importlib.import_module(info.name)


def test_error_subclasses_exist() -> None:
    assert {InvalidArgument, EditNotFound, UnsupportedModel} <= all_subclasses(EditcacheError)


def test_every_error_subclass_has_a_specific_status_code() -> None:
    import_every_server_module()
    subclasses = all_subclasses(EditcacheError)
    assert subclasses
    vague = {grpc.StatusCode.INTERNAL, grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN}
    bad = sorted(f"{c.__module__}.{c.__qualname__}: {c.code}" for c in subclasses
                 if not isinstance(c.code, grpc.StatusCode) or c.code in vague)
    assert not bad, f"errors without a specific status code: {bad}"


# --- the rpc wrappers ---------------------------------------------------------------------------

class Aborted(Exception):
    """What FakeContext.abort raises, as grpc's abort raises to end the call."""


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.aborts: list[tuple[grpc.StatusCode, str]] = []
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.aborts.append((code, details))
        raise Aborted


OPEN = Authorizer(None)  # auth off: every caller may do everything


class Servicer:
    def __init__(self, error: BaseException | None, auth: Authorizer = OPEN) -> None:
        self.error = error
        self.auth = auth

    @unary(Role.WRITE)
    async def Call(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> str:  # noqa: N802
        if self.error is not None:
            raise self.error
        return request.prompt.upper()

    @streaming(Role.READ)
    async def Stream(  # noqa: N802 - gRPC method name
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[str]:
        yield request.prompt
        if self.error is not None:
            raise self.error
        yield request.prompt.upper()


def call(
    error: BaseException | None, auth: Authorizer = OPEN, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[object, FakeContext]:
    context = FakeContext(metadata)

    async def go() -> object:
        return await Servicer(error, auth).Call(pb.GenerateRequest(namespace="a", prompt="hi"), context)  # type: ignore[arg-type]

    try:
        return asyncio.run(go()), context
    except Aborted:
        return Aborted, context


def stream(error: BaseException | None) -> tuple[list[str], bool, FakeContext]:
    context = FakeContext()
    items: list[str] = []

    async def go() -> None:
        async for item in Servicer(error).Stream(pb.GenerateRequest(prompt="hi"), context):  # type: ignore[arg-type]
            items.append(item)

    try:
        asyncio.run(go())
    except Aborted:
        return items, True, context
    return items, False, context


def test_unary_passes_results_through() -> None:
    result, context = call(None)
    assert result == "HI"
    assert context.aborts == []


@pytest.mark.parametrize("error", [
    InvalidArgument("namespace 'x y' is invalid"),
    EditNotFound("no edit with id 'abc'"),
    ResourceExhausted("queue is full"),
    UnsupportedModel("no layer template for 'mamba'"),
    EditcacheError("something broke inside"),
])
def test_unary_turns_domain_error_into_its_status(error: EditcacheError) -> None:
    result, context = call(error)
    assert result is Aborted
    assert context.aborts == [(type(error).code, str(error))]


@pytest.mark.parametrize("error", [RuntimeError("secret path /root/x"), KeyError("k"), ZeroDivisionError("by zero")])
def test_unary_turns_unexpected_error_into_generic_internal(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    result, context = call(error)
    assert result is Aborted
    [(code, details)] = context.aborts
    assert code is grpc.StatusCode.INTERNAL
    assert details and str(error) not in details and "secret" not in details
    assert "Call" in caplog.text  # logged with the method name for the operator


def test_streaming_passes_items_through() -> None:
    items, aborted, context = stream(None)
    assert items == ["hi", "HI"] and not aborted and context.aborts == []


def test_streaming_turns_domain_error_into_its_status_after_earlier_items() -> None:
    items, aborted, context = stream(InvalidArgument("options.top_p must be in (0, 1]"))
    assert items == ["hi"] and aborted
    assert context.aborts == [(grpc.StatusCode.INVALID_ARGUMENT, "options.top_p must be in (0, 1]")]


def test_streaming_turns_unexpected_error_into_generic_internal() -> None:
    items, aborted, context = stream(RuntimeError("boom /secret"))
    assert aborted
    [(code, details)] = context.aborts
    assert code is grpc.StatusCode.INTERNAL and "secret" not in details


# --- authorization declared on the wrappers -------------------------------------------------------------------

READER = TokenEntry("reader", hash_token("reader-token"), ("a",), Role.READ)


@pytest.mark.parametrize(("metadata", "code"), [
    ((), grpc.StatusCode.UNAUTHENTICATED),
    ((("authorization", "Bearer reader-token"),), grpc.StatusCode.PERMISSION_DENIED),  # Call needs WRITE
])
def test_unary_refuses_callers_without_the_declared_role(
    metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    result, context = call(None, Authorizer([READER]), metadata)
    assert result is Aborted
    [(aborted_code, details)] = context.aborts
    assert aborted_code is code
    if code is grpc.StatusCode.PERMISSION_DENIED:
        assert "Call needs write" in details  # the RPC's own name, from the method


def test_unary_lets_a_caller_with_the_role_through() -> None:
    writer = TokenEntry("writer", hash_token("writer-token"), ("a",), Role.WRITE)
    result, context = call(None, Authorizer([writer]), (("authorization", "Bearer writer-token"),))
    assert result == "HI" and context.aborts == []
