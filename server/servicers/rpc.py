"""The one place where domain errors become gRPC statuses."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from time import monotonic
from typing import Any, TypeVar

import grpc

from server.errors import EditcacheError

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def unary(
    method: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except EditcacheError as exc:
            await context.abort(exc.code, str(exc))
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        raise AssertionError("context.abort returned")  # abort always raises

    return wrapper


def streaming(
    method: Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except EditcacheError as exc:
            await context.abort(exc.code, str(exc))
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return wrapper


def caller_gone(context: grpc.aio.ServicerContext) -> Callable[[], bool]:
    """True once the call is over (cancelled, failed) or past its deadline; safe to call from any thread."""
    done = threading.Event()
    context.add_done_callback(lambda _: done.set())
    remaining_s = context.time_remaining()
    deadline = None if remaining_s is None else monotonic() + remaining_s
    return lambda: done.is_set() or (deadline is not None and monotonic() >= deadline)
