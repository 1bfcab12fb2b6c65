"""Domain errors, each carrying the gRPC status code it becomes.

    EditcacheError                 INTERNAL
    ├── InvalidArgument            INVALID_ARGUMENT   a malformed field; the message names it
    ├── EditNotFound               NOT_FOUND
    ├── Unavailable                UNAVAILABLE        e.g. the model is still loading
    ├── ResourceExhausted          RESOURCE_EXHAUSTED e.g. a full queue
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


class Unavailable(EditcacheError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(EditcacheError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(EditcacheError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UnsupportedModel(FailedPrecondition):
    pass
