"""Issue 23's probes as tests, over real gRPC with tokens: parametric options and scope, export paths, tiny
temperatures, control characters, ListBakedEdits across namespaces, and edit ids without a route."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import EditcacheClient, EditcacheError, GenerationOptions, ParametricOptions
from client.launch import LocalServer
from server.auth.roles import Role
from server.auth.tokens import TokenEntry, append_entry, hash_token

SUBJECT, PROMPT = "france", "the capital of france is"
TOKENS = {  # name: (namespaces, role)
    "root": (("*",), Role.ADMIN),
    "a-admin": (("team-a",), Role.ADMIN),
    "alice": (("team-a",), Role.WRITE),
    "bob": (("team-b",), Role.WRITE),
    "auditor": (("team-a", "team-b"), Role.READ),
}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    data = tmp_path_factory.mktemp("hardening-data")
    tokens_file = data / "tokens.toml"
    for name, (namespaces, role) in TOKENS.items():
        append_entry(tokens_file, TokenEntry(name, hash_token(f"{name}-token"), namespaces, role))
    server = LocalServer(tiny_model_dir, data, "--tokens-file", str(tokens_file), "--gate", "similarity",
                         "--context-prefixes", "0", "--stats-tokens", "2000")
    server.start()
    yield server
    server.stop()


def client(server: LocalServer, name: str, namespace: str = "team-a") -> EditcacheClient:
    return server.client(namespace, token=f"{name}-token")


def refused(call: object) -> EditcacheError:
    with pytest.raises(EditcacheError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_parametric_options_must_be_finite_and_in_range(server: LocalServer) -> None:
    with client(server, "root") as root:
        edit = root.add_edit(SUBJECT, PROMPT, "berlin")
        cases = [
            ("ft", ParametricOptions(lr=math.inf, norm_constraint=math.inf), "options.lr"),
            ("ft", ParametricOptions(norm_constraint=math.inf), "options.norm_constraint"),
            ("ft", ParametricOptions(lr=math.nan), "options.lr"),
            ("rome", ParametricOptions(lr=1e30), "options.lr"),
            ("memit", ParametricOptions(mom2_weight=math.inf), "options.mom2_weight"),
            ("alphaedit", ParametricOptions(null_space_cutoff=math.nan), "null_space_cutoff"),
        ]
        for method, options, field in cases:
            error = refused(lambda m=method, o=options: root.apply_parametric(m, [edit.id], options=o))
            assert error.code.name == "INVALID_ARGUMENT" and field in error.details, error.details
        assert root.baked_edits(namespace="") == []  # nothing reached the weights
        root.delete_edit(edit.id)


def test_parametric_calls_need_an_admin_token_for_every_namespace(server: LocalServer) -> None:
    # Weights are shared by all namespaces: an admin of team-a alone may neither change nor export them.
    with client(server, "a-admin") as a_admin, client(server, "root") as root:
        edit = a_admin.add_edit(SUBJECT, PROMPT, "berlin")
        for call in (lambda: a_admin.apply_parametric("ft", [edit.id]), lambda: a_admin.rollback_parametric(edit.id),
                     lambda: a_admin.export_model("by-a-admin")):
            error = refused(call)
            assert error.code.name == "PERMISSION_DENIED" and "every namespace ('*')" in error.details, error.details
        assert [b.edit_id for b in root.apply_parametric("ft", [edit.id]).edits] == [edit.id]
        assert root.rollback_parametric(edit.id).edit_id == edit.id
        a_admin.delete_edit(edit.id)


def test_exports_stay_in_the_export_directory(server: LocalServer, tmp_path: Path) -> None:
    exports = server.data_dir / "exports"
    exports.mkdir(exist_ok=True)
    (exports / "out").symlink_to(tmp_path, target_is_directory=True)
    (exports / "a-file").write_text("x")
    cases = [
        ("../escaped", "INVALID_ARGUMENT", "'..'"),
        (str(tmp_path / "abs"), "INVALID_ARGUMENT", "outside the export directory"),
        ("out/inside", "INVALID_ARGUMENT", "symbolic link"),
        ("bad\x00name", "INVALID_ARGUMENT", "NUL"),
        ("x" * 5000, "INVALID_ARGUMENT", "characters"),
        ("y" * 300, "INVALID_ARGUMENT", "characters"),
        ("/proc/self/mem", "INVALID_ARGUMENT", "outside the export directory"),
        ("a-file", "FAILED_PRECONDITION", "not a directory"),
        ("a-file/below", "FAILED_PRECONDITION", "not a directory"),
        ("", "INVALID_ARGUMENT", "empty"),
    ]
    with client(server, "root") as root:
        for path, code, words in cases:
            error = refused(lambda p=path: root.export_model(p))
            assert error.code.name == code and words in error.details, (path[:20], error.details)
        assert list(tmp_path.iterdir()) == []  # nothing written through the link
        written = root.export_model("models/first")
        assert written == str((exports / "models" / "first").resolve())
        assert (exports / "models" / "first" / "config.json").exists()
        assert root.export_model(str(exports.resolve() / "second")).endswith("/second")  # absolute, inside


def test_tiny_temperatures_decode_greedily(server: LocalServer) -> None:
    with client(server, "alice") as alice:
        greedy = alice.generate(PROMPT, options=GenerationOptions(max_new_tokens=4), route="base").token_ids
        for temperature in (1e-38, 1e-45, 5e-4):
            options = GenerationOptions(max_new_tokens=4, temperature=temperature)
            assert alice.generate(PROMPT, options=options, route="base").token_ids == greedy


def test_control_characters_are_refused_in_edits_but_tab_and_newline_are_text(server: LocalServer) -> None:
    with client(server, "alice") as alice:
        for subject, prompt, target, field in [
            (SUBJECT, f"\x1b[2J{PROMPT}", "rome", "prompt"),
            (SUBJECT, PROMPT, "rome\x07", "target_new"),
            ("fr\x1bance", "the capital of fr\x1bance is", "rome", "subject"),
        ]:
            error = refused(lambda s=subject, p=prompt, t=target: alice.add_edit(s, p, t))
            assert error.code.name == "INVALID_ARGUMENT" and f"edits[0].{field}" in error.details, error.details
            assert "control character" in error.details
        error = refused(lambda: alice.add_edit(SUBJECT, PROMPT, "rome", paraphrases=["where\r is france"]))
        assert "paraphrases[0]" in error.details
        alice.delete_edit(alice.add_edit(SUBJECT, PROMPT, "rome\tor\nmilan").id)


def test_list_baked_edits_with_no_namespace_lists_what_the_caller_may_read(server: LocalServer) -> None:
    with client(server, "root", "team-b") as root, client(server, "alice", "") as alice, \
            client(server, "auditor", "") as auditor:
        edit = root.add_edit(SUBJECT, PROMPT, "berlin")
        root.apply_parametric("ft", [edit.id])
        try:
            assert alice.baked_edits() == []  # team-a only: team-b's baked edit is not hers to see
            assert [(b.namespace, b.edit_id) for b in auditor.baked_edits()] == [("team-b", edit.id)]
            assert [b.edit_id for b in root.baked_edits(namespace="")] == [edit.id]
        finally:
            root.rollback_parametric(edit.id)
            root.delete_edit(edit.id)


def test_an_edit_id_without_a_route_is_refused_and_another_namespaces_is_not_found(server: LocalServer) -> None:
    with client(server, "bob", "team-b") as bob, client(server, "alice") as alice:
        foreign = bob.add_edit(SUBJECT, PROMPT, "berlin")
        for call in (lambda: alice.generate(PROMPT, edit_id=foreign.id),
                     lambda: alice.generate(PROMPT, edit_id=foreign.id, route="base"),
                     lambda: alice.score(PROMPT, " berlin", edit_id=foreign.id)):
            error = refused(call)
            assert error.code.name == "INVALID_ARGUMENT"
            assert "edit_id is only used with an in-scope route" in error.details
        error = refused(lambda: alice.generate(PROMPT, edit_id=foreign.id, route="prompt"))
        assert error.code.name == "NOT_FOUND"
        bob.delete_edit(foreign.id)
