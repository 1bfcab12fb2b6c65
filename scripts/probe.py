#!/usr/bin/env python
"""Adversarial probes of a running server (issue 23): each probe sends what an attacker or an unlucky operator
would, and reports the status code it got. A probe fails on INTERNAL or UNKNOWN, on a code other than the ones it
expects, or on an answer taken from another namespace's edit.

The script starts its own server (loopback, with a tokens file it writes, so cross-namespace and role probes
run) on `--model`: the tiny test model in `make test` (tests/integration/test_probe.py), the real model on demand.

    .venv/bin/python scripts/probe.py                      # Gemma-3-270M, the default model
    .venv/bin/python scripts/probe.py --model DIR --json out.json

A markdown table goes to stdout; the last line is a JSON summary. Exit status 1 when any probe failed.
Adding a probe: write `def probe_x(lab: Lab) -> list[Outcome]` and list it in PROBES.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import grpc

from client import EditcacheClient, EditcacheError, GenerationOptions, ParametricOptions
from client.launch import LocalServer
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from server.auth.roles import Role
from server.auth.tokens import TokenEntry, append_entry, hash_token

NEVER = {"INTERNAL", "UNKNOWN"}
TOKENS = {  # name: (namespaces, role); the token is "<name>-probe-token"
    "root": (("*",), Role.ADMIN),  # admin of every namespace: the only one that may change shared weights
    "a-admin": (("probe-a",), Role.ADMIN),  # admin of one namespace
    "alice": (("probe-a",), Role.WRITE),
    "bob": (("probe-b",), Role.WRITE),
}
SUBJECT, PROMPT = "Space Needle", "The Space Needle is located in the city of"


@dataclass
class Outcome:
    """One request of a probe: the status code it got and the codes that would be right."""

    probe: str
    what: str
    code: str
    expected: tuple[str, ...]
    cross_namespace: bool = False  # an answer came from another namespace's edit
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.code in self.expected and self.code not in NEVER and not self.cross_namespace


@dataclass
class Lab:
    """What probes share: the server this script started, its data directory and a client per token."""

    server: LocalServer
    work_dir: Path
    edits: dict[str, str] = field(default_factory=dict)  # namespace → an edit id stored there

    @property
    def export_dir(self) -> Path:
        return self.server.data_dir / "exports"  # the default export_dir under --data-dir

    def client(self, token_name: str, namespace: str) -> EditcacheClient:
        return self.server.client(namespace, token=token(token_name))


def token(name: str) -> str:
    return f"{name}-probe-token"


def code_of(call: Callable[[], object]) -> tuple[str, str]:
    """(status code name, message) of one call; OK when it returns."""
    try:
        call()
    except EditcacheError as exc:
        return exc.code.name, exc.details[:160]
    except grpc.RpcError as exc:
        return exc.code().name, (exc.details() or "")[:160]  # type: ignore[attr-defined]
    return "OK", ""


def outcome(probe: str, what: str, call: Callable[[], object], *expected: str) -> Outcome:
    code, detail = code_of(call)
    return Outcome(probe, what, code, expected, detail=detail)


# --- probes: one function each, returning one Outcome per request ---------------------------------------------


def probe_parametric_options(lab: Lab) -> list[Outcome]:
    """Item 1: non-finite or out-of-range options never reach the weights; one namespace's admin may not edit them."""
    edit = lab.edits["probe-a"]
    cases = {
        "ft lr=inf norm_constraint=inf": ("ft", ParametricOptions(lr=math.inf, norm_constraint=math.inf)),
        "ft lr=nan": ("ft", ParametricOptions(lr=math.nan)),
        "memit mom2_weight=inf": ("memit", ParametricOptions(mom2_weight=math.inf)),
        "rome lr=1e30": ("rome", ParametricOptions(lr=1e30)),
        "alphaedit null_space_cutoff=nan": ("alphaedit", ParametricOptions(null_space_cutoff=math.nan)),
    }
    found = []
    with lab.client("root", "probe-a") as root, lab.client("a-admin", "probe-a") as a_admin:
        for what, (method, options) in cases.items():
            apply = partial(root.apply_parametric, method, [edit], options=options)
            found.append(outcome("parametric_options", f"root: {what}", apply, "INVALID_ARGUMENT"))
        found.append(outcome("parametric_options", "one-namespace admin: ft with defaults",
                             lambda: a_admin.apply_parametric("ft", [edit]), "PERMISSION_DENIED"))
        found.append(outcome("parametric_options", "one-namespace admin: rollback",
                             lambda: a_admin.rollback_parametric(edit), "PERMISSION_DENIED"))
    return found


def probe_weights_stay_finite(lab: Lab) -> list[Outcome]:
    """Item 1's damage: after the refused options, other namespaces still get finite scores and sampled text."""
    with lab.client("bob", "probe-b") as bob:
        code, detail = code_of(lambda: _finite_score(bob))
        sampled = outcome("weights_finite", "probe-b: sampling at temperature 1", lambda: bob.generate(
            "The capital of France is", options=GenerationOptions(max_new_tokens=4, temperature=1.0, seed=1)), "OK")
    return [Outcome("weights_finite", "probe-b: Score is finite", code, ("OK",), detail=detail), sampled]


def _finite_score(client: EditcacheClient) -> None:
    scored = client.score("The capital of France is", " Paris", route="base")
    if not all(math.isfinite(x) for x in scored.target_logprobs):
        raise EditcacheError(f"non-finite log-probabilities {scored.target_logprobs}", grpc.StatusCode.DATA_LOSS)


def probe_export_paths(lab: Lab) -> list[Outcome]:
    """Item 2: exports stay under the export directory; bad paths are the caller's error, never INTERNAL."""
    lab.export_dir.mkdir(parents=True, exist_ok=True)
    outside = lab.work_dir / "outside"
    link = lab.export_dir / "link-out"
    if not link.is_symlink():
        link.symlink_to(outside, target_is_directory=True)
    a_file = lab.export_dir / "a-file"
    a_file.write_text("not a directory")
    client_errors = ("INVALID_ARGUMENT", "FAILED_PRECONDITION")
    paths = {
        "'..' out of the export dir": "../../escaped",
        "absolute, outside": str(outside / "abs"),
        "through a symlink": "link-out/inside",
        "a NUL byte": "bad\x00name",
        "5000 characters": "x" * 5000,
        "/proc/self/mem": "/proc/self/mem",
        "an existing file": "a-file",
    }
    found = []
    with lab.client("root", "probe-a") as root, lab.client("a-admin", "probe-a") as a_admin:
        for what, path in paths.items():
            found.append(outcome("export_paths", f"root: {what}", partial(root.export_model, path), *client_errors))
        found.append(outcome("export_paths", "one-namespace admin: a fresh name",
                             lambda: a_admin.export_model("by-a-admin"), "PERMISSION_DENIED"))
    if outside.exists():
        found.append(Outcome("export_paths", "nothing written outside the export dir", "WROTE_OUTSIDE", ("OK",)))
    return found


def probe_tiny_temperature(lab: Lab) -> list[Outcome]:
    """Item 6: a temperature too small to divide by is greedy, not a NaN in the sampler."""
    with lab.client("alice", "probe-a") as alice:
        return [outcome("tiny_temperature", f"temperature {t}", partial(
            alice.generate, "The capital of France is", options=GenerationOptions(max_new_tokens=3, temperature=t)),
            "OK") for t in (1e-38, 1e-45, 1e-6)]


def probe_control_characters(lab: Lab) -> list[Outcome]:
    """Item 8: terminal escapes in edit fields are refused; tab and newline are text."""
    with lab.client("alice", "probe-a") as alice:
        return [
            outcome("control_chars", "ESC[2J in the prompt", lambda: alice.add_edit(
                SUBJECT, f"\x1b[2J{PROMPT}", "Taipei"), "INVALID_ARGUMENT"),
            outcome("control_chars", "BEL in the target", lambda: alice.add_edit(
                SUBJECT, PROMPT, "Taipei\x07"), "INVALID_ARGUMENT"),
            outcome("control_chars", "tab and newline in the target", lambda: alice.delete_edit(alice.add_edit(
                SUBJECT, PROMPT, "Taipei\t\n").id), "OK"),
        ]


def probe_list_baked_everywhere(lab: Lab) -> list[Outcome]:
    """Item 9: ListBakedEdits with no namespace lists every namespace the token may read."""
    with lab.client("alice", "") as alice, lab.client("root", "") as root:
        return [outcome("list_baked", "alice, namespace ''", lambda: alice.baked_edits(namespace=""), "OK"),
                outcome("list_baked", "root, namespace ''", lambda: root.baked_edits(namespace=""), "OK")]


def probe_cancelled_stream(lab: Lab) -> list[Outcome]:
    """Item 10: a stream cancelled mid-answer leaves no pending task behind (the server logs none)."""
    with grpc.insecure_channel(lab.server.addr) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        metadata = [("authorization", f"Bearer {token('alice')}")]
        request = pb.GenerateRequest(namespace="probe-a", prompt="Once upon a time",
                                     options=pb.GenerationOptions(max_new_tokens=64))
        for _ in range(3):
            call = stub.GenerateStream(request, metadata=metadata)
            next(iter(call))
            call.cancel()
        # A full answer after the cancels: the server has handled them by the time it replies.
        code, detail = code_of(lambda: stub.Generate(request, metadata=metadata))
    destroyed = "Task was destroyed but it is pending" in lab.server.log_text()
    return [Outcome("cancelled_stream", "3 cancels, then a Generate", code, ("OK",), detail=detail),
            Outcome("cancelled_stream", "log has no destroyed pending task", "LOGGED" if destroyed else "OK", ("OK",))]


def probe_foreign_edit_id(lab: Lab) -> list[Outcome]:
    """Item 12: another namespace's edit id never answers; without a route an edit id is refused."""
    foreign = lab.edits["probe-b"]
    found = []
    with lab.client("alice", "probe-a") as alice:
        for route in (None, "ike", "prompt"):
            what = f"alice names probe-b's edit, route {route or 'unset'}"
            try:
                answer = alice.generate(PROMPT, options=GenerationOptions(max_new_tokens=2), route=route,
                                        edit_id=foreign)
            except EditcacheError as exc:
                found.append(Outcome("foreign_edit_id", what, exc.code.name, ("INVALID_ARGUMENT", "NOT_FOUND",
                                     "FAILED_PRECONDITION"), detail=exc.details[:160]))
                continue
            found.append(Outcome("foreign_edit_id", what, "OK", ("INVALID_ARGUMENT", "NOT_FOUND"),
                                 cross_namespace=answer.edit_id == foreign))
    return found


def probe_cross_namespace_tokens(lab: Lab) -> list[Outcome]:
    """Tokens for one namespace are refused in another, on reads, writes and parametric calls."""
    foreign = lab.edits["probe-b"]
    with lab.client("alice", "probe-b") as alice:
        calls: dict[str, Callable[[], object]] = {
            "ListEdits": alice.list_edits, "GetEdit": lambda: alice.get_edit(foreign),
            "DeleteEdit": lambda: alice.delete_edit(foreign), "Generate": lambda: alice.generate(PROMPT),
            "AddEdits": lambda: alice.add_edit(SUBJECT, PROMPT, "Lima"),
            "ListBakedEdits": alice.baked_edits,
        }
        return [outcome("cross_namespace", f"alice in probe-b: {rpc}", call, "PERMISSION_DENIED")
                for rpc, call in calls.items()]


def probe_swapped_index(lab: Lab) -> list[Outcome]:
    """Item 4: the index manifest names another namespace's file (each file still matching its checksum); after a
    restart, probe-a's question is never answered from probe-b's edit."""
    lab.server.stop()
    manifest_path = lab.server.data_dir / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    files = manifest["namespaces"]
    files["probe-a"], files["probe-b"] = files["probe-b"], files["probe-a"]
    manifest_path.write_text(json.dumps(manifest))
    lab.server.start()
    with lab.client("alice", "probe-a") as alice:
        answer = alice.generate(PROMPT, options=GenerationOptions(max_new_tokens=2))
    return [Outcome("swapped_index", "restart on a manifest with probe-a's and probe-b's files swapped; ask in "
                    "probe-a", "OK", ("OK",), cross_namespace=answer.edit_id == lab.edits["probe-b"])]


def probe_emptied_store(lab: Lab) -> list[Outcome]:
    """Item 3: a zero-length edits.sqlite under an index that says edits were stored stops the start (exit 3)
    instead of serving an empty memory; the store is then put back and the server serves its edits again."""
    lab.server.stop()
    store = lab.server.data_dir / "edits.sqlite"
    kept = store.read_bytes()
    store.write_bytes(b"")
    try:
        lab.server.start()
        code = "STARTED"
    except RuntimeError as exc:
        code = "REFUSED_START" if "exited with 3" in str(exc) else "START_ERROR"
    finally:
        lab.server.stop()
        store.write_bytes(kept)
    found = [Outcome("emptied_store", "start on a zero-length edits.sqlite", code, ("REFUSED_START",))]
    lab.server.start()
    found.append(outcome("emptied_store", "restart on the restored store: GetEdit in probe-a",
                         partial(_get, lab, lab.edits["probe-a"]), "OK"))
    return found


def _get(lab: Lab, edit_id: str) -> None:
    with lab.client("alice", "probe-a") as alice:
        alice.get_edit(edit_id)


# Storage probes restart the server, so they come last.
PROBES: list[Callable[[Lab], list[Outcome]]] = [
    probe_cross_namespace_tokens,
    probe_parametric_options,
    probe_weights_stay_finite,
    probe_export_paths,
    probe_tiny_temperature,
    probe_control_characters,
    probe_list_baked_everywhere,
    probe_cancelled_stream,
    probe_foreign_edit_id,
    probe_swapped_index,
    probe_emptied_store,
]


# --- running ------------------------------------------------------------------------------------------------------


@contextmanager
def started_lab(model: str, work_dir: Path, server_args: list[str]) -> Iterator[Lab]:
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    tokens_file = work_dir / "tokens.toml"
    if not tokens_file.exists():
        for name, (namespaces, role) in TOKENS.items():
            append_entry(tokens_file, TokenEntry(name, hash_token(token(name)), namespaces, role))
    server = LocalServer(model, data_dir, "--tokens-file", str(tokens_file), *server_args)
    server.start()
    try:
        lab = Lab(server, work_dir)
        for name, namespace in (("alice", "probe-a"), ("bob", "probe-b")):
            with lab.client(name, namespace) as writer:
                lab.edits[namespace] = writer.add_edit(SUBJECT, PROMPT, "Taipei" if name == "alice" else "Lima").id
        yield lab
    finally:
        server.stop()


def run_probes(lab: Lab, probes: list[Callable[[Lab], list[Outcome]]]) -> list[Outcome]:
    found: list[Outcome] = []
    for probe in probes:
        name = probe.__name__.removeprefix("probe_")
        try:
            found.extend(probe(lab))
        except Exception as exc:  # a probe that breaks is reported as a failure, and the others still run
            found.append(Outcome(name, "the probe itself", "PROBE_ERROR", ("OK",), detail=repr(exc)[:160]))
    return found


def table(found: list[Outcome]) -> str:
    lines = ["| probe | request | status | expected | verdict |", "|---|---|---|---|---|"]
    for o in found:
        verdict = "ok" if o.ok else ("FAIL: cross-namespace answer" if o.cross_namespace else "FAIL")
        what = o.what.replace("|", "\\|").encode("unicode_escape").decode()
        lines.append(f"| {o.probe} | {what} | {o.code} | {' or '.join(o.expected)} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", help="model name or Hugging Face directory to serve")
    parser.add_argument("--work-dir", type=Path, help="data and tokens go here (default: a temporary directory)")
    parser.add_argument("--server-arg", action="append", default=[], help="passed to editcache-server (repeat)")
    parser.add_argument("--only", action="append", default=[], help="run only this probe (name without probe_)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    probes = [p for p in PROBES if not args.only or p.__name__.removeprefix("probe_") in args.only]
    with tempfile.TemporaryDirectory(prefix="editcache-probe-") as tmp, \
            started_lab(args.model, args.work_dir or Path(tmp), args.server_arg) as lab:
        found = run_probes(lab, probes)
    print(table(found))
    failed = [o for o in found if not o.ok]
    summary = {
        "probes": len(found), "failed": len(failed),
        "internal": sum(o.code in NEVER for o in found), "cross_namespace": sum(o.cross_namespace for o in found),
        "outcomes": [asdict(o) | {"ok": o.ok} for o in found],
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
