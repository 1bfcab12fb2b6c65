"""Domain errors, each carrying the gRPC status code it becomes.

    EditcacheError                 INTERNAL
    ├── InvalidArgument            INVALID_ARGUMENT   a malformed field; the message names it
    ├── EditNotFound               NOT_FOUND
    ├── Unauthenticated            UNAUTHENTICATED    no token, or one the server does not know
    ├── PermissionDenied           PERMISSION_DENIED  a token for another namespace, or a lesser role
    ├── Unavailable                UNAVAILABLE        e.g. the model is still loading
    │   └── StorageFailed          UNAVAILABLE        a data file is damaged or cannot be written; names the file
    ├── ResourceExhausted          RESOURCE_EXHAUSTED e.g. a full queue
    │   └── DiskFull               RESOURCE_EXHAUSTED the disk holding the data directory is full
    ├── Cancelled                  CANCELLED          the caller went away (or its deadline passed) first
    ├── FailedPrecondition         FAILED_PRECONDITION
    └── UnsupportedModel           FAILED_PRECONDITION no layer template for this architecture
"""

from __future__ import annotations

import grpc


class EditcacheError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(EditcacheError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class EditNotFound(EditcacheError):
    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(EditcacheError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(EditcacheError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Cancelled(EditcacheError):
    code = grpc.StatusCode.CANCELLED


class Unavailable(EditcacheError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(EditcacheError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StorageFailed(Unavailable):
    """At start the server refuses to run on it; at run time writes stop until a restart."""


class DiskFull(ResourceExhausted):
    """Nothing was written; writes succeed again once space is freed."""


class FailedPrecondition(EditcacheError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UnsupportedModel(FailedPrecondition):
    pass
