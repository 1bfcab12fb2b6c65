from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.auth.authorizer import Authorizer
from server.auth.cli import main
from server.auth.exposure import exposure_problem
from server.auth.roles import Role, Scope
from server.auth.tokens import TokenEntry, TokensFileError, append_entry, hash_token, load_tokens
from server.errors import PermissionDenied, Unauthenticated

ALICE = TokenEntry("alice", hash_token("alice-token"), ("a",), Role.WRITE)
READER = TokenEntry("reader", hash_token("reader-token"), ("a", "b"), Role.READ)
ROOT = TokenEntry("root", hash_token("root-token"), ("*",), Role.ADMIN)
A_ADMIN = TokenEntry("a-admin", hash_token("a-admin-token"), ("a",), Role.ADMIN)
AUTH = Authorizer([ALICE, READER, ROOT, A_ADMIN])


def bearer(token: str) -> list[tuple[str, str]]:
    return [("user-agent", "x"), ("authorization", f"Bearer {token}")]


def test_off_without_entries_lets_everything_through() -> None:
    Authorizer(None).check([], "any", Role.ADMIN, "Anything")
    assert not Authorizer(None).enabled and AUTH.enabled


@pytest.mark.parametrize("metadata", [[], [("authorization", "Bearer wrong")], [("authorization", "alice-token")],
                                      [("authorization", "Basic alice-token")], [("authorization", "Bearer ")]])
def test_missing_or_bad_token_is_unauthenticated(metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(Unauthenticated):
        AUTH.check(metadata, "a", Role.READ, "ListEdits")


def test_token_grants_only_its_namespaces_and_roles() -> None:
    AUTH.check(bearer("alice-token"), "a", Role.WRITE, "AddEdits")
    AUTH.check([("authorization", b"bearer alice-token")], "a", Role.READ, "GetEdit")  # bytes, any case
    with pytest.raises(PermissionDenied, match="namespace 'b'"):
        AUTH.check(bearer("alice-token"), "b", Role.READ, "ListEdits")
    with pytest.raises(PermissionDenied, match="AddEdits needs write"):
        AUTH.check(bearer("reader-token"), "b", Role.WRITE, "AddEdits")
    with pytest.raises(PermissionDenied, match="needs admin"):
        AUTH.check(bearer("alice-token"), "a", Role.ADMIN, "ApplyParametric")
    AUTH.check(bearer("root-token"), "anything", Role.ADMIN, "ApplyParametric")
    AUTH.check(bearer("reader-token"), None, Role.READ, "GetServerInfo")  # no namespace: any token


def test_every_namespace_scope_needs_a_wildcard_token() -> None:
    AUTH.check(bearer("a-admin-token"), "a", Role.ADMIN, "ApplyParametric")  # the namespace scope alone: allowed
    for namespace in ("a", None):
        with pytest.raises(PermissionDenied, match=r"grants every namespace \('\*'\)"):
            AUTH.check(bearer("a-admin-token"), namespace, Role.ADMIN, "ExportModel", Scope.EVERY)
        AUTH.check(bearer("root-token"), namespace, Role.ADMIN, "ExportModel", Scope.EVERY)
    with pytest.raises(PermissionDenied, match="needs admin"):  # the role is still checked first
        AUTH.check(bearer("alice-token"), "a", Role.ADMIN, "ApplyParametric", Scope.EVERY)


def test_readable_scope_lets_an_empty_namespace_through_and_says_what_may_be_read() -> None:
    AUTH.check(bearer("alice-token"), "", Role.READ, "ListBakedEdits", Scope.READABLE)
    with pytest.raises(PermissionDenied, match="namespace 'b'"):
        AUTH.check(bearer("alice-token"), "b", Role.READ, "ListBakedEdits", Scope.READABLE)
    assert AUTH.readable(bearer("reader-token")) == frozenset({"a", "b"})
    assert AUTH.readable(bearer("root-token")) is None
    assert Authorizer(None).readable([]) is None


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_append_then_load_round_trips_and_stores_no_token(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tokens{suffix}"
    append_entry(path, ALICE)
    append_entry(path, ROOT)
    assert load_tokens(path) == [ALICE, ROOT]
    assert "alice-token" not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(TokensFileError, match="already has an entry named 'alice'"):
        append_entry(path, ALICE)


@pytest.mark.parametrize(("entries", "message"), [
    ([{"name": "x", "token_sha256": "abc", "namespaces": ["a"], "role": "read"}], "64 lowercase hex"),
    ([{"name": "x", "token_sha256": "0" * 64, "namespaces": [], "role": "read"}], "namespaces"),
    ([{"name": "x", "token_sha256": "0" * 64, "namespaces": ["a"], "role": "boss"}], "role must be"),
    ([{"name": "x", "token": "plain", "namespaces": ["a"], "role": "read"}], "unknown field"),
    ([{"name": "x", "token_sha256": "0" * 64, "namespaces": ["a"], "role": "read"},
      {"name": "y", "token_sha256": "0" * 64, "namespaces": ["a"], "role": "read"}], "duplicate token_sha256"),
])
def test_malformed_tokens_file_is_refused(tmp_path: Path, entries: list[dict[str, object]], message: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(TokensFileError, match=message):
        load_tokens(path)


def test_missing_tokens_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokensFileError, match="cannot read"):
        Authorizer.from_file(tmp_path / "nope.toml")


def test_add_command_prints_a_token_that_authenticates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tokens.toml"
    assert main(["add", "bob", "--namespace", "team-b", "--role", "write", "--file", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    auth = Authorizer.from_file(path)
    auth.check(bearer(token), "team-b", Role.WRITE, "AddEdits")
    with pytest.raises(PermissionDenied):
        auth.check(bearer(token), "team-c", Role.READ, "ListEdits")
    assert token not in path.read_text()


@pytest.mark.parametrize(("listen", "auth", "insecure", "refused"), [
    ("127.0.0.1:50051", False, False, False),
    ("localhost:1", False, False, False),
    ("[::1]:1", False, False, False),
    ("0.0.0.0:50051", False, False, True),
    ("10.1.2.3:50051", False, False, True),
    ("myhost:50051", False, False, True),
    ("0.0.0.0:50051", True, False, False),
    ("0.0.0.0:50051", False, True, False),
])
def test_exposure_without_tokens_is_refused_unless_insecure(
    listen: str, auth: bool, insecure: bool, refused: bool
) -> None:
    problem = exposure_problem(listen, auth, insecure)
    assert (problem is not None) == refused
    if problem:
        assert "--insecure" in problem and "tokens_file" in problem


def test_server_cli_refuses_a_public_address_without_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main as server_main

    assert server_main(["--listen", "0.0.0.0:0"]) == 2
    assert "refusing to listen on 0.0.0.0:0 without tokens" in capsys.readouterr().err
