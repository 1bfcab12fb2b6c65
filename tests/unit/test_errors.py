from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import AsyncIterator

import grpc
import pytest

import server
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
    def __init__(self) -> None:
        self.aborts: list[tuple[grpc.StatusCode, str]] = []

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.aborts.append((code, details))
        raise Aborted


class Servicer:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    @unary
    async def Call(self, request: str, context: grpc.aio.ServicerContext) -> str:  # noqa: N802 - gRPC method name
        if self.error is not None:
            raise self.error
        return request.upper()

    @streaming
    async def Stream(self, request: str, context: grpc.aio.ServicerContext) -> AsyncIterator[str]:  # noqa: N802
        yield request
        if self.error is not None:
            raise self.error
        yield request.upper()


def call(error: BaseException | None) -> tuple[object, FakeContext]:
    context = FakeContext()

    async def go() -> object:
        return await Servicer(error).Call("hi", context)  # type: ignore[arg-type]

    try:
        return asyncio.run(go()), context
    except Aborted:
        return Aborted, context


def stream(error: BaseException | None) -> tuple[list[str], bool, FakeContext]:
    context = FakeContext()
    items: list[str] = []

    async def go() -> None:
        async for item in Servicer(error).Stream("hi", context):  # type: ignore[arg-type]
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
