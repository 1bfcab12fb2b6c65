"""Bearer tokens → namespaces and roles; and `python -m server.auth add`, which makes new tokens.

The tokens file (TOML or JSON, named by the `tokens_file` setting) holds hashes only:

    [[tokens]]
    name = "alice"
    token_sha256 = "9f86d0…"      # sha256 hex of the token
    namespaces = ["team-a"]        # or ["*"] for every namespace
    role = "write"                 # read < write < admin

A JSON file is a list of the same objects (or {"tokens": [...]}). Without a tokens
file, auth is off: every caller may do everything (single-user local mode).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from server.errors import PermissionDenied, Unauthenticated

ENTRY_FIELDS = ("name", "token_sha256", "namespaces", "role")
ANY_NAMESPACE = "*"


class Role(IntEnum):
    """Each role implies the ones below it."""

    READ = 1  # Generate, GenerateStream, Score, Chat, GetEdit, ListEdits, ListBakedEdits, GetServerInfo
    WRITE = 2  # AddEdits, DeleteEdit, Correct
    ADMIN = 3  # ApplyParametric, RollbackParametric, ExportModel: they change what every namespace sees

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"role must be one of read, write, admin; got {name!r}") from None


class TokensFileError(ValueError):
    """The tokens file is missing or malformed; the server refuses to start."""


@dataclass(frozen=True)
class TokenEntry:
    name: str
    token_sha256: str
    namespaces: tuple[str, ...]
    role: Role

    def grants(self, namespace: str | None) -> bool:
        """None: a call that names no namespace (GetServerInfo), which any token may make."""
        return namespace is None or ANY_NAMESPACE in self.namespaces or namespace in self.namespaces


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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

    def check(self, metadata: Iterable[tuple[str, str | bytes]], namespace: str | None, role: Role, rpc: str) -> None:
        """Raises Unauthenticated (no or unknown token) or PermissionDenied (namespace, role)."""
        if self._entries is None:
            return
        entry = self._identify(metadata, rpc)
        if not entry.grants(namespace):
            raise PermissionDenied(
                f"token {entry.name!r} does not grant namespace {namespace!r} "
                f"(it grants {', '.join(entry.namespaces)})"
            )
        if entry.role < role:
            raise PermissionDenied(
                f"token {entry.name!r} has role {entry.role.name.lower()}; {rpc} needs {role.name.lower()}"
            )

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


# --- the tokens file ---------------------------------------------------------------------


def load_tokens(path: Path) -> list[TokenEntry]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TokensFileError(f"cannot read tokens_file {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
            items = data.get("tokens", []) if isinstance(data, dict) else data
        else:
            items = tomllib.loads(raw.decode()).get("tokens", [])
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokensFileError(f"tokens_file {path} is not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    if not isinstance(items, list):
        raise TokensFileError(f"tokens_file {path}: expected a list of token entries")
    entries = [_entry(item, f"{path}: entry {i}") for i, item in enumerate(items)]
    for what in ("name", "token_sha256"):
        values = [getattr(e, what) for e in entries]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise TokensFileError(f"tokens_file {path}: duplicate {what} {', '.join(dupes)}")
    return entries


def _entry(item: object, where: str) -> TokenEntry:
    if not isinstance(item, dict):
        raise TokensFileError(f"{where}: expected a table with {', '.join(ENTRY_FIELDS)}")
    unknown = sorted(set(item) - set(ENTRY_FIELDS))
    missing = [f for f in ENTRY_FIELDS if f not in item]
    if unknown or missing:
        raise TokensFileError(f"{where}: unknown field(s) {unknown}, missing field(s) {missing}")
    digest, namespaces = item["token_sha256"], item["namespaces"]
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise TokensFileError(f"{where}: token_sha256 must be 64 lowercase hex digits (store hashes, never tokens)")
    if not isinstance(namespaces, list) or not namespaces or not all(isinstance(n, str) for n in namespaces):
        raise TokensFileError(f"{where}: namespaces must be a non-empty list of names, or [\"*\"]")
    try:
        role = Role.parse(str(item["role"]))
    except ValueError as exc:
        raise TokensFileError(f"{where}: {exc}") from None
    return TokenEntry(str(item["name"]), digest, tuple(namespaces), role)


def append_entry(path: Path, entry: TokenEntry) -> None:
    """Adds an entry to a TOML or JSON tokens file, creating it (mode 0600) when missing."""
    existing = load_tokens(path) if path.exists() else []
    if any(e.name == entry.name for e in existing):
        raise TokensFileError(f"tokens_file {path} already has an entry named {entry.name!r}")
    record = {"name": entry.name, "token_sha256": entry.token_sha256,
              "namespaces": list(entry.namespaces), "role": entry.role.name.lower()}
    if path.suffix.lower() == ".json":
        items = [{"name": e.name, "token_sha256": e.token_sha256, "namespaces": list(e.namespaces),
                  "role": e.role.name.lower()} for e in existing]
        text = json.dumps([*items, record], indent=2) + "\n"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return
    block = "\n[[tokens]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in record.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(block)


# --- exposure ----------------------------------------------------------------------------


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def exposure_problem(listen: str, auth_enabled: bool, insecure: bool) -> str | None:
    """Why the server must not start as configured, or None."""
    if auth_enabled or insecure or is_loopback(listen):
        return None
    return (
        f"refusing to listen on {listen} without tokens: anyone who can reach it could read and change "
        "every namespace. Set tokens_file (create entries with `python -m server.auth add`), listen on "
        "127.0.0.1, or pass --insecure if the network is trusted"
    )


# --- python -m server.auth add -----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.auth", description="Manage editcache bearer tokens.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="make a random token, print it once, store its hash")
    add.add_argument("name", help="who the token is for (unique in the file)")
    add.add_argument("--namespace", action="append", required=True, metavar="NS",
                     help="namespace the token grants (repeatable; '*' for all)")
    add.add_argument("--role", default="read", choices=[r.name.lower() for r in Role])
    add.add_argument("--file", type=Path, default=Path("tokens.toml"),
                     help="tokens file to append to (.toml or .json; default tokens.toml)")
    args = parser.parse_args(argv)
    token = "ec_" + secrets.token_urlsafe(32)
    entry = TokenEntry(args.name, hash_token(token), tuple(args.namespace), Role.parse(args.role))
    try:
        append_entry(args.file, entry)
    except TokensFileError as exc:
        print(f"server.auth: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"added {args.name!r} ({args.role}, namespaces {', '.join(args.namespace)}) to {args.file}; "
          "the token is shown only this once", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
