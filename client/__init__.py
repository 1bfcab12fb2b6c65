"""Python client for the editcache server, and the `editctl` command (client/editctl.py).

Depends only on grpc and the generated editcache.v1 stubs: importing it never
loads torch, transformers, faiss or the server.
"""

from client.client import (
    BakedEditRecord,
    ChatResult,
    ChatStream,
    ChatTurn,
    Correction,
    EditcacheClient,
    EditInput,
    EditPage,
    EditRecord,
    GenerationResult,
    GenerationStream,
    ParametricProgress,
    ParametricResult,
    ScoreResult,
    ServerInfo,
)
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

__all__ = [
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
    "GenerationResult",
    "GenerationStream",
    "ParametricProgress",
    "ParametricResult",
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
