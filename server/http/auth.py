"""Who is calling, and in which namespace: the HTTP twin of the gRPC metadata check.

The same `Authorizer` and tokens file as gRPC, the same role per operation (each route names the RPC it mirrors),
and the namespace from one header.
"""

from __future__ import annotations

from fastapi import Request

from server.auth.authorizer import Authorizer
from server.auth.roles import Role

NAMESPACE_HEADER = "X-Editcache-Namespace"
DEFAULT_NAMESPACE = "default"


def namespace_of(request: Request) -> str:
    """The header's value, or "default"; the service validates it (a bad one is a 400 naming `namespace`)."""
    return request.headers.get(NAMESPACE_HEADER, DEFAULT_NAMESPACE)


def authorize(auth: Authorizer, request: Request, role: Role, rpc: str, namespace: str | None) -> None:
    """Raises Unauthenticated (401) or PermissionDenied (403) as the gRPC check does for the RPC named `rpc`.

    Starlette gives header names in lower case, as gRPC gives metadata keys, so the `Authorization: Bearer <token>`
    header is found where the Authorizer looks for the metadata.
    """
    auth.check(request.headers.items(), namespace, role, rpc)
