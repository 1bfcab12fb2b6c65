"""Tenants over real gRPC and TLS: tokens map to namespaces and roles; health and reflection stay open."""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from client import EditcacheClient, GenerationOptions, NotFound, PermissionDenied, Unauthenticated, Unavailable
from client.launch import LocalServer
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from server.auth.roles import Role
from server.auth.tokens import TokenEntry, append_entry, hash_token

PROMPT = "the capital of france is"
TOKENS = {  # name: (token, namespaces, role)
    "alice": ("alice-secret", ("team-a",), Role.WRITE),
    "bob": ("bob-secret", ("team-b",), Role.WRITE),
    "auditor": ("auditor-secret", ("team-a", "team-b"), Role.READ),
    "root": ("root-secret", ("*",), Role.ADMIN),
}


def write_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "editcache test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One server with tokens and TLS."""
    data = tmp_path_factory.mktemp("auth-data")
    tokens_file = data / "tokens.toml"
    for name, (token, namespaces, role) in TOKENS.items():
        append_entry(tokens_file, TokenEntry(name, hash_token(token), namespaces, role))
    cert, key = write_self_signed_cert(data)
    server = LocalServer(
        tiny_model_dir, data, "--tokens-file", str(tokens_file), "--tls-cert", str(cert), "--tls-key", str(key),
        "--gate", "similarity", tls_ca=str(cert),
    )
    server.start()
    yield server
    server.stop()


def client(server: LocalServer, name: str | None, namespace: str = "team-a") -> EditcacheClient:
    return server.client(namespace, token=TOKENS[name][0] if name else None)


def test_health_and_reflection_need_no_token_but_rpcs_do(server: LocalServer) -> None:
    with client(server, None) as anonymous:
        assert anonymous.health() == "SERVING"
        for call in (anonymous.list_edits, lambda: anonymous.generate(PROMPT), anonymous.server_info,
                     lambda: anonymous.add_edit("france", PROMPT, "rome")):
            with pytest.raises(Unauthenticated, match="authorization: Bearer"):
                call()
    guesser = EditcacheClient(server.addr, namespace="team-a", token="guessed", tls_ca=server.tls_ca)
    with guesser, pytest.raises(Unauthenticated, match="unknown token"):
        guesser.list_edits()


def test_plaintext_client_cannot_talk_to_the_tls_port(server: LocalServer) -> None:
    plaintext = EditcacheClient(server.addr, token=TOKENS["root"][0], timeout_s=3)
    with plaintext, pytest.raises(Unavailable):
        plaintext.list_edits()


def test_token_for_one_namespace_cannot_list_read_or_delete_another(server: LocalServer) -> None:
    with client(server, "alice", "team-a") as alice, client(server, "bob", "team-b") as bob:
        edit = bob.add_edit("france", PROMPT, "rome")
        for call in (lambda: alice.list_edits(namespace="team-b"), lambda: alice.get_edit(edit.id, namespace="team-b"),
                     lambda: alice.delete_edit(edit.id, namespace="team-b"),
                     lambda: alice.generate(PROMPT, namespace="team-b"),
                     lambda: alice.add_edit("france", PROMPT, "madrid", namespace="team-b")):
            with pytest.raises(PermissionDenied, match="does not grant namespace 'team-b'"):
                call()
        with pytest.raises(NotFound):  # in its own namespace, another tenant's id is simply unknown
            alice.get_edit(edit.id)
        assert bob.get_edit(edit.id).id == edit.id  # untouched


def test_an_edit_in_one_namespace_never_changes_answers_in_another(server: LocalServer) -> None:
    with client(server, "alice", "team-a") as alice, client(server, "bob", "team-b") as bob:
        prompt = "the capital of italy is"  # no test edits italy in team-b
        before = bob.generate(prompt, options=GenerationOptions(max_new_tokens=6))
        edit = alice.add_edit("italy", prompt, "rome")
        assert alice.generate(prompt, options=GenerationOptions(max_new_tokens=6)).edit_id == edit.id
        after = bob.generate(prompt, options=GenerationOptions(max_new_tokens=6))
        assert before.route == after.route == "base"
        assert after.token_ids == before.token_ids
        alice.delete_edit(edit.id)


def test_roles_limit_what_a_token_may_do(server: LocalServer) -> None:
    with client(server, "auditor", "team-b") as auditor, client(server, "root", "team-b") as root:
        edit = root.add_edit("germany", "the capital of germany is", "madrid")  # admin implies write, any namespace
        assert auditor.get_edit(edit.id).id == edit.id and auditor.list_edits().total >= 1
        assert auditor.generate(PROMPT, options=GenerationOptions(max_new_tokens=2)).token_ids
        assert auditor.server_info().model_type == "llama"
        assert auditor.attribute(PROMPT, "paris", layers=[0], top=1, steps=2).layers  # reads the model as Score does
        with pytest.raises(PermissionDenied, match="has role read; AddEdits needs write"):
            auditor.add_edit("france", PROMPT, "rome")
        with pytest.raises(PermissionDenied, match="DeleteEdit needs write"):
            auditor.delete_edit(edit.id)
        root.delete_edit(edit.id)


def test_other_namespaces_need_a_wildcard_token_and_the_bearer_scheme_is_case_insensitive(
    server: LocalServer,
) -> None:
    other = "t-" + uuid.uuid4().hex[:8]
    with client(server, "alice", other) as alice, pytest.raises(PermissionDenied):
        alice.list_edits()
    with grpc.secure_channel(server.addr, grpc.ssl_channel_credentials(Path(str(server.tls_ca)).read_bytes())) as ch:
        stub = pb_grpc.EditServiceStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListEdits(pb.ListEditsRequest(namespace=other), metadata=[("authorization", "bearer  nope ")])
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.ListEdits(pb.ListEditsRequest(namespace=other),
                               metadata=[("authorization", f"bearer {TOKENS['root'][0]}")])
        assert reply.total == 0


def test_chat_needs_read_and_correct_needs_write_on_the_namespace(server: LocalServer) -> None:
    from client import ChatTurn, EditInput

    turns = [ChatTurn("user", "what is the capital of france")]
    fix = EditInput("france", PROMPT, "rome")
    with client(server, "auditor", "team-a") as auditor, client(server, "alice", "team-a") as alice:
        stream = auditor.chat(turns, options=GenerationOptions(max_new_tokens=2))  # read may chat
        "".join(stream)
        assert stream.result is not None and stream.result.generation.token_ids
        with pytest.raises(PermissionDenied, match="has role read; Correct needs write"):
            auditor.correct("what is the capital of france", "paris", edit=fix)
        with pytest.raises(PermissionDenied, match="does not grant namespace 'team-b'"):
            list(alice.chat(turns, namespace="team-b"))
        with pytest.raises(PermissionDenied, match="does not grant namespace 'team-b'"):
            alice.correct("what is the capital of france", "paris", edit=fix, namespace="team-b")
        edit = alice.correct("what is the capital of france", "paris", edit=fix).edit
        alice.delete_edit(edit.id)


def test_parametric_edits_need_the_admin_role(server: LocalServer, tmp_path: Path) -> None:
    # They change the weights every namespace is served from, so a namespace's writer may not make them.
    with client(server, "alice", "team-a") as alice, client(server, "root", "team-a") as root:
        edit = alice.add_edit("france", PROMPT, "rome")
        with pytest.raises(PermissionDenied, match="ApplyParametric needs admin"):
            alice.apply_parametric("rome", [edit.id])
        with pytest.raises(PermissionDenied, match="RollbackParametric needs admin"):
            alice.rollback_parametric(edit.id)
        with pytest.raises(PermissionDenied, match="ExportModel needs admin"):
            alice.export_model(str(tmp_path / "out"))
        assert alice.baked_edits() == []  # reading the list is allowed
        assert root.baked_edits() == []
