"""The tokens file: entries that map a token's hash to namespaces and a role; read, checked and appended to.

The file (TOML or JSON, named by the `tokens_file` setting) holds hashes only:

    [[tokens]]
    name = "alice"
    token_sha256 = "9f86d0…"      # sha256 hex of the token
    namespaces = ["team-a"]        # or ["*"] for every namespace
    role = "write"                 # read < write < admin

A JSON file is a list of the same objects (or {"tokens": [...]}).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from server.auth.roles import Role

ENTRY_FIELDS = ("name", "token_sha256", "namespaces", "role")
ANY_NAMESPACE = "*"


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
