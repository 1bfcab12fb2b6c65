"""Bearer tokens → namespaces and roles: the check every RPC makes before it runs.

Without a tokens file, auth is off: every caller may do everything (single-user local mode).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from pathlib import Path

from server.auth.roles import Role, Scope
from server.auth.tokens import ANY_NAMESPACE, TokenEntry, hash_token, load_tokens
from server.errors import PermissionDenied, Unauthenticated


class Authorizer:
    """Checks a call's bearer token against the entries; with no entries (None) auth is off."""

    def __init__(self, entries: Sequence[TokenEntry] | None) -> None:
        self._entries = None if entries is None else tuple(entries)

    @classmethod
    def from_file(cls, path: Path | None) -> Authorizer:
        return cls(None if path is None else load_tokens(path))

    @property
    def enabled(self) -> bool:
        return self._entries is not None

    def check(
        self, metadata: Iterable[tuple[str, str | bytes]], namespace: str | None, role: Role, rpc: str,
        scope: Scope = Scope.NAMESPACE,
    ) -> None:
        """Raises Unauthenticated (no or unknown token) or PermissionDenied (namespace, role, scope)."""
        if self._entries is None:
            return
        entry = self._identify(metadata, rpc)
        if scope is Scope.READABLE and not namespace:
            namespace = None  # every namespace the token grants: the service filters by `readable`
        if not entry.grants(namespace):
            raise PermissionDenied(
                f"token {entry.name!r} does not grant namespace {namespace!r} "
                f"(it grants {', '.join(entry.namespaces)})"
            )
        if entry.role < role:
            raise PermissionDenied(
                f"token {entry.name!r} has role {entry.role.name.lower()}; {rpc} needs {role.name.lower()}"
            )
        if scope is Scope.EVERY and ANY_NAMESPACE not in entry.namespaces:
            raise PermissionDenied(
                f"token {entry.name!r} grants {', '.join(entry.namespaces)}; {rpc} changes what every namespace "
                f"sees, so it needs an {role.name.lower()} token that grants every namespace ('*')"
            )

    def readable(self, metadata: Iterable[tuple[str, str | bytes]]) -> frozenset[str] | None:
        """The namespaces the call's token grants; None when that is every namespace (or auth is off).

        Called after `check`, so the token is known to be valid."""
        if self._entries is None:
            return None
        entry = self._identify(metadata, "")
        return None if ANY_NAMESPACE in entry.namespaces else frozenset(entry.namespaces)

    def token_name(self, metadata: Iterable[tuple[str, str | bytes]]) -> str:
        """The name of the call's token, for the audit log; "" when auth is off. Called after `check`."""
        return "" if self._entries is None else self._identify(metadata, "").name

    def _identify(self, metadata: Iterable[tuple[str, str | bytes]], rpc: str) -> TokenEntry:
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            raise Unauthenticated(f"{rpc} needs a token: send metadata 'authorization: Bearer <token>'")
        value = values[0].decode(errors="replace") if isinstance(values[0], bytes) else values[0]
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        presented = hash_token(token.strip())
        found = None
        for entry in self._entries or ():  # compare with every entry, in constant time each
            if hmac.compare_digest(presented, entry.token_sha256):
                found = entry
        if found is None:
            raise Unauthenticated("unknown token; ask the operator for one (python -m server.auth add)")
        return found
