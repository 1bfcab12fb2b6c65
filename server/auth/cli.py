"""`python -m server.auth add`: makes a random token, prints it once and stores only its hash."""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from server.auth.roles import Role
from server.auth.tokens import TokenEntry, TokensFileError, append_entry, hash_token


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
