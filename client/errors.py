"""Client-side exceptions, one per gRPC status code the server uses.

The server raises its domain errors (`server/errors.py`) and turns them into
statuses; this module turns the statuses back into exceptions, so callers
catch `NotFound` rather than inspect a `grpc.RpcError`.

    EditcacheError          any other code (its `.code` says which)
    ├── InvalidArgument     INVALID_ARGUMENT   a malformed field; the details name it
    ├── NotFound            NOT_FOUND
    ├── Unauthenticated     UNAUTHENTICATED    no token, or an unknown one
    ├── PermissionDenied    PERMISSION_DENIED  a token for another namespace
    ├── FailedPrecondition  FAILED_PRECONDITION
    ├── ResourceExhausted   RESOURCE_EXHAUSTED e.g. a full queue
    ├── Unavailable         UNAVAILABLE        server unreachable, or the model still loading
    ├── DeadlineExceeded    DEADLINE_EXCEEDED
    └── Internal            INTERNAL           see the server log
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc


class EditcacheError(Exception):
    """A failed RPC. `.code` is the status code, `.details` the server's message."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.details else self.code.name


class InvalidArgument(EditcacheError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(EditcacheError):
    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(EditcacheError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(EditcacheError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(EditcacheError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(EditcacheError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(EditcacheError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(EditcacheError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(EditcacheError):
    code = grpc.StatusCode.INTERNAL


ERRORS_BY_CODE: dict[grpc.StatusCode, type[EditcacheError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        Unauthenticated,
        PermissionDenied,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
    )
}

# Codes the server does not send on purpose; they arrive as the base class.
UNMAPPED_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
    }
)


def error_from_rpc(exc: grpc.RpcError) -> EditcacheError:
    """The client exception for a failed RPC; codes without a class give the base class."""
    # Every RpcError the channel raises is also a grpc.Call; a bare one has no code.
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else None) or ""
    cls = ERRORS_BY_CODE.get(code)
    return cls(details) if cls is not None else EditcacheError(details, code=code)


@contextmanager
def map_rpc_errors() -> Iterator[None]:
    """Re-raise any `grpc.RpcError` in the block as its `EditcacheError`."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
