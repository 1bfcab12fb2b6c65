"""The part of grpc.aio.ServicerContext the servicers use, over the context Ray Serve's proxy hands a replica."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

import grpc


class RayContext(Protocol):
    """What we use of ray.serve.grpc_util.RayServegRPCContext (a copy of the proxy's context, sent with the call)."""

    def invocation_metadata(self) -> Sequence[tuple[str, str]]: ...
    def set_code(self, code: grpc.StatusCode) -> None: ...
    def set_details(self, details: str) -> None: ...
    def set_trailing_metadata(self, trailing_metadata: list[tuple[str, str]]) -> None: ...


class Aborted(Exception):
    """Ends a proxied call; the status is already on the Ray context, where the proxy reads it from (Ray wraps the
    exception in a gRPCStatusError carrying the code and details set before it was raised)."""


class ProxiedContext:
    """invocation_metadata, abort, add_done_callback and time_remaining (server/servicers/rpc.py) for one proxied call.

    The caller's metadata (the bearer token) arrives in the Ray context. The proxy passes no deadline: a call is
    bounded by the proxy's request_timeout_s, and a caller who goes (its deadline, a cancel) cancels the replica's
    task, whose end runs the done callbacks, so a generation stops as it does on editcache-server.
    """

    def __init__(self, ray_context: RayContext) -> None:
        self._ray = ray_context
        self._callbacks: list[Callable[[Any], None]] = []

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._ray.invocation_metadata())

    def time_remaining(self) -> float | None:
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.append(callback)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        self._ray.set_code(code)
        self._ray.set_details(details)
        raise Aborted(details)

    def end(self) -> None:
        """The call is over (answered, failed or cancelled)."""
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)
