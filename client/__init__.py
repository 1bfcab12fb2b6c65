"""Python client for the editcache server, and the `editctl` command (client/editctl.py).

Depends only on grpc and the generated editcache.v1 stubs: importing it never
loads torch, transformers, faiss or the server.

records.py holds the dataclasses callers see, convert.py maps them to and from
protobuf, streams.py the streamed answers, client.py the EditcacheClient itself.
"""

from client.client import DEFAULT_ADDR, DEFAULT_NAMESPACE, EditcacheClient
from client.errors import (
    DeadlineExceeded,
    EditcacheError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    map_rpc_errors,
)
from client.records import (
    AttributionResult,
    BakedEditRecord,
    ChatResult,
    ChatTurn,
    Correction,
    EditInput,
    EditPage,
    EditRecord,
    GenerationOptions,
    GenerationResult,
    HopResult,
    MultiHopResult,
    ParametricOptions,
    ParametricProgress,
    ParametricResult,
    ScoreResult,
    ServerInfo,
)
from client.streams import ChatStream, GenerationStream, ResultStream

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_NAMESPACE",
    "BakedEditRecord",
    "ChatResult",
    "ChatStream",
    "ChatTurn",
    "Correction",
    "DeadlineExceeded",
    "EditInput",
    "EditPage",
    "EditRecord",
    "EditcacheClient",
    "EditcacheError",
    "FailedPrecondition",
    "GenerationOptions",
    "ParametricOptions",
    "GenerationResult",
    "GenerationStream",
    "HopResult",
    "MultiHopResult",
    "ParametricProgress",
    "ParametricResult",
    "AttributionResult",
    "ResultStream",
    "ScoreResult",
    "ServerInfo",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "map_rpc_errors",
]
