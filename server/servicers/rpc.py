"""What every servicer shares: the authorization each RPC declares, the one place where domain errors become gRPC
statuses, the caller's liveness, and relaying streamed text."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from time import monotonic
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

from server import metrics
from server.auth.authorizer import Authorizer
from server.auth.roles import Role, Scope
from server.errors import EditcacheError
from server.interfaces import StopCheck, TextSink
from server.service import Service, ServiceHolder
from server.service.concurrency import relay

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp")
T = TypeVar("T")
S = TypeVar("S", bound="Servicer")
Context: TypeAlias = grpc.aio.ServicerContext  # what every RPC method receives beside its request


class Servicer:
    def __init__(self, holder: ServiceHolder, auth: Authorizer) -> None:
        self._holder = holder
        self.auth = auth

    @property
    def service(self) -> Service:
        return self._holder.get()


def unary(
    role: Role, scope: Scope = Scope.NAMESPACE,
) -> Callable[[Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]]],
              Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]]]:
    """The RPC needs `role` in the namespaces `scope` names (by default the request's, if it has one); errors
    become statuses."""

    def decorate(
        method: Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
    ) -> Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
        @functools.wraps(method)
        async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            async with _call(self, role, scope, method.__name__, "unary", request, context):
                return await method(self, request, context)
            raise AssertionError("an error ends the call in _call")  # context.abort always raises

        return wrapper

    return decorate


def streaming(
    role: Role, scope: Scope = Scope.NAMESPACE,
) -> Callable[[Callable[[S, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]],
              Callable[[S, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]]:
    """`unary` for server-streaming RPCs: an error after some messages ends the stream with its status."""

    def decorate(
        method: Callable[[S, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
    ) -> Callable[[S, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
        @functools.wraps(method)
        async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
            async with _call(self, role, scope, method.__name__, "server_stream", request, context):
                async for item in method(self, request, context):
                    yield item

        return wrapper

    return decorate


@asynccontextmanager
async def _call(
    servicer: Servicer, role: Role, scope: Scope, rpc: str, kind: str, request: Message, context: Context
) -> AsyncIterator[None]:
    """What both RPC shapes share: counted in the metrics, authorized first, any error turned into the call's status."""
    with metrics.rpc(_service_name(type(servicer)), rpc, kind) as call:
        try:
            _authorize(servicer.auth, role, scope, rpc, request, context)
            yield
        except Exception as exc:
            call.code = _code_name(exc)
            await _abort(context, exc, rpc)


async def _abort(context: grpc.aio.ServicerContext, error: Exception, rpc: str) -> NoReturn:
    """Ends the call with the error's status; an unexpected error is logged and its details kept from the caller."""
    if isinstance(error, EditcacheError):
        await context.abort(error.code, str(error))
    log.error("unhandled error in %s", rpc, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
    raise AssertionError("context.abort returned")  # abort always raises


def _code_name(error: Exception) -> str:
    """The status `_abort` sends for `error`, as go-grpc-prometheus labels it (e.g. NOT_FOUND)."""
    return error.code.name if isinstance(error, EditcacheError) else grpc.StatusCode.INTERNAL.name


def _service_name(servicer: type) -> str:
    """The gRPC service a servicer class implements (editcache.v1.EditService), from its generated base class."""
    for base in servicer.__mro__:
        if base.__module__.endswith("_pb2_grpc") and base.__name__.endswith("Servicer"):
            return f"{base.__module__.rsplit('.', 1)[0]}.{base.__name__.removesuffix('Servicer')}"
    return servicer.__name__


def _authorize(
    auth: Authorizer, role: Role, scope: Scope, rpc: str, request: Message, context: grpc.aio.ServicerContext
) -> None:
    # Before the service is asked for: an unauthenticated caller learns nothing, not even that it is loading.
    namespace = request.namespace if "namespace" in request.DESCRIPTOR.fields_by_name else None  # type: ignore[attr-defined]
    auth.check(context.invocation_metadata() or (), namespace, role, rpc, scope)


def readable_namespaces(servicer: Servicer, context: grpc.aio.ServicerContext) -> frozenset[str] | None:
    """For `Scope.READABLE` RPCs: the namespaces the caller's token grants, None for all."""
    return servicer.auth.readable(context.invocation_metadata() or ())


def token_name(servicer: Servicer, context: grpc.aio.ServicerContext) -> str:
    """The caller's token name, for the audit log ("" when auth is off)."""
    return servicer.auth.token_name(context.invocation_metadata() or ())


def caller_gone(context: grpc.aio.ServicerContext) -> StopCheck:
    """True once the call is over (cancelled, failed) or past its deadline; safe to call from any thread."""
    done = threading.Event()
    context.add_done_callback(lambda _: done.set())
    remaining_s = context.time_remaining()
    deadline = None if remaining_s is None else monotonic() + remaining_s
    return lambda: done.is_set() or (deadline is not None and monotonic() >= deadline)


async def stream_text(
    answer: Callable[[TextSink, StopCheck], Awaitable[T]], context: grpc.aio.ServicerContext,
    message: Callable[..., Resp], final_to_pb: Callable[[T], Any],
) -> AsyncIterator[Resp]:
    """A `message(text_delta=…)` per piece of generated text, then `message(final=final_to_pb(answer))`, the
    convention of every streaming answer in the API; generation stops if the caller goes."""
    answering = relay(answer, caller_gone(context))
    async with aclosing(answering):
        async for delta, result in answering:
            yield message(text_delta=delta) if result is None else message(final=final_to_pb(result))
