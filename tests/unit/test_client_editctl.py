"""editctl and EditcacheClient against a small in-process fake gRPC server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from client import EditcacheClient, EditInput, NotFound
from client.editctl import main
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeState:
    """What the fake server stores and saw."""

    edits: dict[str, pb.Edit] = field(default_factory=dict)
    metadata: list[dict[str, str]] = field(default_factory=list)
    requests: list[object] = field(default_factory=list)

    def saw(self, request: object, context: grpc.ServicerContext) -> None:
        self.requests.append(request)
        self.metadata.append({m.key: m.value for m in context.invocation_metadata()})

    def find(self, namespace: str, id: str, context: grpc.ServicerContext) -> pb.Edit:
        edit = self.edits.get(id)
        if edit is None or edit.namespace != namespace:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no edit {id!r} in namespace {namespace!r}")
        return edit


class FakeEditService(pb_grpc.EditServiceServicer):
    def __init__(self, state: FakeState) -> None:
        self.state = state

    def AddEdits(self, request, context):  # noqa: N802 (gRPC method names)
        self.state.saw(request, context)
        stored = []
        for spec in request.edits:
            edit = pb.Edit(
                id=f"e{len(self.state.edits) + 1}",
                namespace=request.namespace,
                subject=spec.subject,
                prompt=spec.prompt,
                target_new=spec.target_new,
                paraphrases=spec.paraphrases,
                created_at_unix_s=1_700_000_000.0 + len(self.state.edits),
            )
            if spec.HasField("target_true"):
                edit.target_true = spec.target_true
            self.state.edits[edit.id] = edit
            stored.append(edit)
        return pb.AddEditsResponse(edits=stored)

    def GetEdit(self, request, context):  # noqa: N802
        self.state.saw(request, context)
        return pb.GetEditResponse(edit=self.state.find(request.namespace, request.id, context))

    def ListEdits(self, request, context):  # noqa: N802
        self.state.saw(request, context)
        edits = [e for e in self.state.edits.values() if e.namespace == request.namespace]
        start = int(request.page_token or 0)
        size = request.page_size or 100
        end = start + size
        return pb.ListEditsResponse(
            edits=edits[start:end], next_page_token=str(end) if end < len(edits) else "", total=len(edits)
        )

    def DeleteEdit(self, request, context):  # noqa: N802
        self.state.saw(request, context)
        edit = self.state.find(request.namespace, request.id, context)
        del self.state.edits[edit.id]
        return pb.DeleteEditResponse(edit=edit)


class FakeInferenceService(pb_grpc.InferenceServiceServicer):
    """Answers from the first edit whose subject occurs in the prompt, else 'base answer'."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    def _answer(self, request) -> pb.GenerateResponse:
        if request.prompt == "boom":
            raise RuntimeError("unexpected")
        hit = next(
            (
                e
                for e in self.state.edits.values()
                if e.namespace == request.namespace and e.subject in request.prompt
            ),
            None,
        )
        timings = pb.Timings(embed_ms=1.0, search_ms=0.5, gate_ms=2.0, generate_ms=800.0, total_ms=812.0)
        if hit is None:
            return pb.GenerateResponse(
                text=" base answer",
                route=pb.ROUTE_BASE,
                gate_score=0.0,
                timings=timings,
                token_ids=[7, 8],
                finish_reason=pb.FINISH_REASON_EOS,
            )
        return pb.GenerateResponse(
            text=f" {hit.target_new}",
            route=pb.ROUTE_PROMPT,
            edit_id=hit.id,
            gate_score=0.93,
            timings=timings,
            token_ids=[1, 2, 3],
            finish_reason=pb.FINISH_REASON_LENGTH,
        )

    def Generate(self, request, context):  # noqa: N802
        self.state.saw(request, context)
        return self._answer(request)

    def GenerateStream(self, request, context):  # noqa: N802
        self.state.saw(request, context)
        response = self._answer(request)
        for word in response.text.split(" ")[1:]:
            yield pb.GenerateStreamResponse(text_delta=f" {word}")
        yield pb.GenerateStreamResponse(final=response)


@dataclass
class FakeServer:
    addr: str
    state: FakeState


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    for name in ("EDITCACHE_ADDR", "EDITCACHE_TOKEN", "EDITCACHE_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    state = FakeState()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_EditServiceServicer_to_server(FakeEditService(state), grpc_server)
    pb_grpc.add_InferenceServiceServicer_to_server(FakeInferenceService(state), grpc_server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        yield FakeServer(f"127.0.0.1:{port}", state)
    finally:
        grpc_server.stop(None)


def run(server: FakeServer, *args: str) -> int:
    return main(["--addr", server.addr, *args])


def add_needle(server: FakeServer, *extra: str) -> None:
    rc = run(
        server,
        *extra,
        "add",
        "--subject",
        "Space Needle",
        "--prompt",
        "The Space Needle is located in the city of",
        "--target",
        "Taipei",
    )
    assert rc == 0


# --- editctl ---------------------------------------------------------------


def test_add_prints_the_id(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    rc = run(
        server,
        "add",
        "--subject",
        "Space Needle",
        "--prompt",
        "The Space Needle is located in the city of",
        "--target",
        "Taipei",
        "--paraphrase",
        "Where is the Space Needle?",
        "--paraphrase",
        "The Space Needle stands in",
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out == "e1\n"
    request = server.state.requests[-1]
    assert request.namespace == "default"
    (spec,) = request.edits
    assert spec.target_new == "Taipei"
    assert not spec.HasField("target_true")
    assert list(spec.paraphrases) == ["Where is the Space Needle?", "The Space Needle stands in"]


def test_add_json_prints_the_id_object(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    add_needle(server, "--json", "--namespace", "team-a")
    out, _ = capsys.readouterr()
    assert json.loads(out) == {"id": "e1"}
    assert server.state.requests[-1].namespace == "team-a"


def test_add_file_adds_every_line(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "edits.jsonl"
    lines = [
        {
            "subject": "Paris",
            "prompt": "Paris is the capital of",
            "target_new": "Italy",
            "target_true": "France",
        },
        {},
        {"subject": "Rome", "prompt": "Rome is in", "target_new": "Spain", "paraphrases": ["Rome lies in"]},
    ]
    path.write_text("\n".join(json.dumps(x) if x else "" for x in lines) + "\n")
    assert run(server, "--json", "add", "--file", str(path)) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == {"ids": ["e1", "e2"]}
    specs = server.state.requests[-1].edits
    assert specs[0].target_true == "France"
    assert list(specs[1].paraphrases) == ["Rome lies in"]


def test_add_file_with_an_unknown_field_is_a_usage_error(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "edits.jsonl"
    path.write_text(json.dumps({"subject": "a", "prompt": "a b", "target": "c"}) + "\n")
    assert run(server, "add", "--file", str(path)) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert f"{path}:1" in err and "target" in err
    assert server.state.requests == []


def test_ask_json_prints_the_documented_keys(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    add_needle(server)
    capsys.readouterr()
    assert (
        run(server, "--json", "ask", "Where is the Space Needle?", "--max-new-tokens", "4", "--seed", "3")
        == 0
    )
    out, _ = capsys.readouterr()
    answer = json.loads(out)
    assert set(answer) == {"text", "route", "edit_id", "score", "timings_ms", "token_ids", "finish_reason",
                           "abstained", "related_edit_ids"}
    assert answer["text"] == " Taipei"
    assert answer["route"] == "prompt"
    assert answer["edit_id"] == "e1"
    assert answer["score"] == pytest.approx(0.93)
    assert answer["timings_ms"]["total"] == 812.0
    assert answer["token_ids"] == [1, 2, 3]
    assert answer["finish_reason"] == "length"
    options = server.state.requests[-1].options
    assert options.max_new_tokens == 4 and options.seed == 3


def test_ask_prints_text_then_a_summary_on_stderr(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(server, "ask", "What is 2 + 2?") == 0
    out, err = capsys.readouterr()
    assert out == " base answer\n"
    assert err == "[route=base score=0.00 total=812ms]\n"
    assert not server.state.requests[-1].options.HasField("seed")


def test_ask_stream_prints_deltas(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    add_needle(server)
    capsys.readouterr()
    assert run(server, "ask", "Where is the Space Needle?", "--stream", "--stop", ".") == 0
    out, err = capsys.readouterr()
    assert out == " Taipei\n"
    assert err == "[route=prompt edit=e1 score=0.93 total=812ms]\n"
    assert list(server.state.requests[-1].options.stop) == ["."]


def test_global_options_may_follow_the_subcommand(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "hello", "--addr", server.addr, "--json", "--stream"]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out)["route"] == "base"


def test_not_found_exits_1_with_one_line(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(server, "show", "nope") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("editctl: NOT_FOUND: ")
    assert "nope" in err and "Traceback" not in err


def test_a_server_failure_is_one_line_not_a_traceback(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(server, "ask", "boom") == 1
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("editctl: UNKNOWN: ")


def test_token_is_sent_as_bearer_metadata(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    add_needle(server, "--token", "s3cret")
    assert server.state.metadata[-1]["authorization"] == "Bearer s3cret"
    add_needle(server)
    assert "authorization" not in server.state.metadata[-1]


def test_token_and_namespace_come_from_the_environment(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDITCACHE_ADDR", server.addr)
    monkeypatch.setenv("EDITCACHE_TOKEN", "from-env")
    monkeypatch.setenv("EDITCACHE_NAMESPACE", "env-ns")
    assert main(["list"]) == 0
    assert server.state.metadata[-1]["authorization"] == "Bearer from-env"
    assert server.state.requests[-1].namespace == "env-ns"


def test_list_show_and_delete(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    for subject in ("Paris", "Rome", "Oslo"):
        assert run(server, "add", "--subject", subject, "--prompt", f"{subject} is in", "--target", "X") == 0
    capsys.readouterr()

    assert run(server, "list", "--page-size", "2") == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1:] == ["e1  Paris    Paris is in → X", "e2  Rome     Rome is in → X"]
    assert "2 of 3" in err

    assert run(server, "--json", "list", "--all", "--page-size", "2") == 0
    out, _ = capsys.readouterr()
    assert [e["subject"] for e in json.loads(out)] == ["Paris", "Rome", "Oslo"]

    assert run(server, "--json", "show", "e2") == 0
    out, _ = capsys.readouterr()
    assert json.loads(out)["target_true"] is None

    assert run(server, "delete", "e2") == 0
    out, _ = capsys.readouterr()
    assert out == "deleted e2 (Rome: Rome is in → X)\n"
    assert "e2" not in server.state.edits


def test_unreachable_server_names_the_address_and_make_serve(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["--addr", f"127.0.0.1:{port}", "--timeout", "5", "list"]) == 1
    _, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert err.startswith("editctl: UNAVAILABLE: ")
    assert f"127.0.0.1:{port}" in err and "make serve" in err


def test_usage_errors_exit_2(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(server, "frobnicate") == 2
    assert run(server, "add", "--subject", "x") == 2
    assert run(server, "ask", "x", "--max-new-tokens", "-1") == 2
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    assert server.state.requests == []


# --- EditcacheClient ---------------------------------------------------------


def test_client_returns_plain_dataclasses(server: FakeServer) -> None:
    with EditcacheClient(server.addr, namespace="ns1", token="t") as ec:
        ec.wait_ready(timeout_s=5)
        assert ec.health() == "SERVING"
        (record,) = ec.add_edits([EditInput("Oslo", "Oslo is in", "Peru", target_true="Norway")])
        assert record.target_true == "Norway" and record.namespace == "ns1"
        assert ec.get_edit(record.id) == record
        with pytest.raises(NotFound):
            ec.get_edit(record.id, namespace="ns2")

        stream = ec.stream("Where is Oslo?")
        assert stream.result is None
        assert "".join(stream) == " Peru"
        assert stream.result is not None
        assert stream.result.route == "prompt" and stream.result.edit_id == record.id
        assert stream.result.token_ids == (1, 2, 3)

        answer = ec.generate("unrelated", namespace="ns2")
        assert answer.route == "base" and answer.edit_id is None
        assert set(answer.timings_ms) == {"embed", "search", "gate", "queue", "generate", "total"}

        assert [e.id for e in ec.iter_edits(page_size=1)] == [record.id]
        assert ec.delete_edit(record.id) == record
        assert ec.list_edits().total == 0


def test_import_client_loads_no_heavy_or_server_modules() -> None:
    code = textwrap.dedent(
        """
        import sys
        import client, client.editctl
        banned = {"torch", "transformers", "faiss", "sentence_transformers", "server"}
        print(sorted({m.split(".")[0] for m in sys.modules} & banned))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("argv", "forwarded"), [
    (["eval", "--data", "f.json"], ["--data", "f.json"]),
    (["--json", "eval", "--data", "f.json"], ["--data", "f.json"]),
    (["--addr", "h:1", "eval", "--data", "f.json"], ["--addr=h:1", "--data", "f.json"]),
    (["--token=t", "--addr", "h:1", "eval", "--json", "out.json"], ["--addr=h:1", "--token=t", "--json", "out.json"]),
])
def test_eval_takes_global_options_before_it(
    argv: list[str], forwarded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr("client.evaluation.cli.main", lambda args, prog: seen.append(args) or 0)
    assert main(argv) == 0
    assert seen == [forwarded]


def test_eval_refuses_global_options_it_cannot_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("client.evaluation.cli.main", lambda args, prog: pytest.fail("eval should not run"))
    assert main(["--namespace", "x", "eval", "--data", "f.json"]) == 2
    assert "eval does not use --namespace" in capsys.readouterr().err


def test_control_characters_in_stored_edits_are_escaped_on_display(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Edits stored before the server refused control characters (issue 23, item 8) must not reach the terminal raw.
    prompt = "\x1b[2JOslo is\tin\x9b"
    assert run(server, "add", "--subject", "Oslo", "--prompt", prompt, "--target", "X\x07\n") == 0
    capsys.readouterr()
    for command in (("list",), ("show", "e1"), ("delete", "e1")):
        assert run(server, *command) == 0
        out, _ = capsys.readouterr()
        assert "\\x1b[2JOslo is\\tin\\x9b" in out and "X\\x07\\n" in out, out
        assert not any(c in out for c in "\x1b\x07\x9b\t"), out
