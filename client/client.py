"""EditcacheClient: a typed, synchronous client for the editcache.v1 API.

Callers see plain frozen dataclasses (`client.records`), never protobuf messages, and
`client.errors` exceptions, never a bare `grpc.RpcError`.

    with EditcacheClient("127.0.0.1:50051", namespace="demo") as ec:
        ec.wait_ready(timeout_s=60)
        edit = ec.add_edit("Space Needle", "The Space Needle is located in the city of", "Taipei")
        answer = ec.generate("Where is the Space Needle?", options=GenerationOptions(max_new_tokens=8))
        print(answer.text, answer.route, answer.edit_id == edit.id)

        stream = ec.stream("The Space Needle is in")
        for delta in stream:
            print(delta, end="", flush=True)
        print(stream.result.route)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import convert
from client.errors import DeadlineExceeded, Internal, Unavailable, map_rpc_errors
from client.records import (
    AttributionResult,
    BakedEditRecord,
    ChatTurn,
    Correction,
    EditEventPage,
    EditEventRecord,
    EditInput,
    EditPage,
    EditRecord,
    GenerationOptions,
    GenerationResult,
    MultiHopResult,
    ParametricOptions,
    ParametricProgress,
    ParametricResult,
    ScoreResult,
    ServerInfo,
)
from client.streams import ChatStream, GenerationStream
from editcache.v1 import chat_pb2 as chat_pb
from editcache.v1 import chat_pb2_grpc as chat_pb_grpc
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from editcache.v1 import parametric_pb2 as parametric_pb
from editcache.v1 import parametric_pb2_grpc as parametric_pb_grpc

DEFAULT_ADDR = "127.0.0.1:50051"
DEFAULT_NAMESPACE = "default"
_SERVER_DEFAULTS = GenerationOptions()
_METHOD_DEFAULTS = ParametricOptions()


class EditcacheClient:
    """A connection to one editcache server, acting in one namespace by default.

    Every method takes an optional `namespace=` that overrides the client's
    for that call. `timeout_s` is the deadline of each call (None: no deadline).
    `token` is sent as `authorization: Bearer <token>`; `tls_ca` (a PEM file of the
    CA or the server's own certificate) makes the connection TLS.
    """

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        token: str | None = None,
        timeout_s: float | None = 120.0,
        tls_ca: str | None = None,
    ) -> None:
        self._addr = addr
        self._namespace = namespace
        self._timeout_s = timeout_s
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        if tls_ca is None:
            self._channel = grpc.insecure_channel(addr)
        else:
            with open(tls_ca, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            self._channel = grpc.secure_channel(addr, credentials)
        self._edits = pb_grpc.EditServiceStub(self._channel)
        self._inference = pb_grpc.InferenceServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._chat = chat_pb_grpc.ChatServiceStub(self._channel)
        self._parametric = parametric_pb_grpc.ParametricServiceStub(self._channel)

    @property
    def addr(self) -> str:
        return self._addr

    @property
    def namespace(self) -> str:
        return self._namespace

    # --- edits -----------------------------------------------------------

    def add_edits(
        self, specs: Sequence[EditInput], *, namespace: str | None = None, skip_supersede: bool = False
    ) -> list[EditRecord]:
        """Store the edits, all or none; returns them in request order. `skip_supersede` stores each as new,
        deciding nothing about superseding (for edits known to coexist, such as an export read back)."""
        edits = [convert.edit_spec(s) for s in specs]
        request = pb.AddEditsRequest(namespace=self._ns(namespace), edits=edits, skip_supersede=skip_supersede)
        with map_rpc_errors():
            response = self._edits.AddEdits(request, **self._call_kwargs())
        return [convert.edit_record(e) for e in response.edits]

    def add_edit(
        self,
        subject: str,
        prompt: str,
        target_new: str,
        *,
        target_true: str | None = None,
        paraphrases: Sequence[str] = (),
        aliases: Sequence[str] = (),
        namespace: str | None = None,
    ) -> EditRecord:
        spec = EditInput(subject, prompt, target_new, target_true, tuple(paraphrases), aliases=tuple(aliases))
        (record,) = self.add_edits([spec], namespace=namespace)
        return record

    def get_edit(self, id: str, *, history: bool = False, namespace: str | None = None) -> EditRecord:
        """The edit, live or superseded; with `history`, its `history` holds its earlier versions and the edits
        it superseded, newest first."""
        request = pb.GetEditRequest(namespace=self._ns(namespace), id=id, history=history)
        with map_rpc_errors():
            response = self._edits.GetEdit(request, **self._call_kwargs())
        return convert.edit_record(response.edit, response.history)

    def update_edit(self, id: str, spec: EditInput, *, namespace: str | None = None) -> EditRecord:
        """Replace the edit's fields, keeping its id; returns the new version (the old one stays in its history)."""
        request = pb.UpdateEditRequest(namespace=self._ns(namespace), id=id, edit=convert.edit_spec(spec))
        with map_rpc_errors():
            response = self._edits.UpdateEdit(request, **self._call_kwargs())
        return convert.edit_record(response.edit)

    def list_edit_events(
        self, page_size: int = 0, page_token: str = "", *, edit_id: str | None = None, namespace: str | None = None
    ) -> EditEventPage:
        """One page of the namespace's audit log, oldest first (admin); only `edit_id`'s events when given."""
        request = pb.ListEditEventsRequest(
            namespace=self._ns(namespace), page_size=page_size, page_token=page_token, edit_id=edit_id or ""
        )
        with map_rpc_errors():
            response = self._edits.ListEditEvents(request, **self._call_kwargs())
        return EditEventPage(tuple(convert.edit_event_record(e) for e in response.events), response.next_page_token)

    def iter_edit_events(
        self, page_size: int = 0, *, edit_id: str | None = None, namespace: str | None = None
    ) -> Iterator[EditEventRecord]:
        """Every event of the namespace's audit log, oldest first, fetching pages as needed."""
        token = ""
        while True:
            page = self.list_edit_events(page_size, token, edit_id=edit_id, namespace=namespace)
            yield from page.events
            token = page.next_page_token
            if not token:
                return

    def list_edits(
        self, page_size: int = 0, page_token: str = "", *, namespace: str | None = None
    ) -> EditPage:
        """One page of edits; `page_size` 0 means the server's default."""
        request = pb.ListEditsRequest(namespace=self._ns(namespace), page_size=page_size, page_token=page_token)
        with map_rpc_errors():
            response = self._edits.ListEdits(request, **self._call_kwargs())
        return EditPage(
            edits=tuple(convert.edit_record(e) for e in response.edits),
            next_page_token=response.next_page_token,
            total=response.total,
        )

    def iter_edits(self, page_size: int = 0, *, namespace: str | None = None) -> Iterator[EditRecord]:
        """Every edit in the namespace, oldest first, fetching pages as needed."""
        token = ""
        while True:
            page = self.list_edits(page_size, token, namespace=namespace)
            yield from page.edits
            token = page.next_page_token
            if not token:
                return

    def delete_edit(self, id: str, *, namespace: str | None = None) -> EditRecord:
        """Delete an edit; returns it as it was before deletion. If it had superseded an edit, that one answers
        again (its id is the returned record's `supersedes`)."""
        request = pb.DeleteEditRequest(namespace=self._ns(namespace), id=id)
        with map_rpc_errors():
            response = self._edits.DeleteEdit(request, **self._call_kwargs())
        return convert.edit_record(response.edit)

    # --- inference -------------------------------------------------------

    def generate(
        self, prompt: str, *, options: GenerationOptions = _SERVER_DEFAULTS, route: str | None = None,
        edit_id: str | None = None, namespace: str | None = None,
    ) -> GenerationResult:
        """Answer a prompt through the gate, decoding with `options` (by default the server's: greedy).

        `route` ("base", "prompt", …) bypasses the gate, for evaluation; an in-scope route answers
        from `edit_id`, or from the best retrieved edit when it is None.
        """
        request = self._generate_request(prompt, options, route, edit_id, namespace)
        with map_rpc_errors():
            response = self._inference.Generate(request, **self._call_kwargs())
        return convert.generation_result(response)

    def stream(
        self, prompt: str, *, options: GenerationOptions = _SERVER_DEFAULTS, route: str | None = None,
        edit_id: str | None = None, namespace: str | None = None,
    ) -> GenerationStream:
        """Like `generate`, but iterate the result for text deltas as they arrive."""
        request = self._generate_request(prompt, options, route, edit_id, namespace)
        with map_rpc_errors():
            call = self._inference.GenerateStream(request, **self._call_kwargs())
        return GenerationStream(call)

    def score(
        self, prompt: str, target: str, *, route: str | None = None, edit_id: str | None = None,
        namespace: str | None = None,
    ) -> ScoreResult:
        """Teacher-forced scores of `target` as the continuation of `prompt` (e.g. " Taipei"), through the gate."""
        request = pb.ScoreRequest(
            namespace=self._ns(namespace), prompt=prompt, target=target,
            route=convert.route_value(route), edit_id=edit_id or "",
        )
        with map_rpc_errors():
            response = self._inference.Score(request, **self._call_kwargs())
        return convert.score_result(response)

    def answer_multihop(
        self, question: str, *, steps: Sequence[str] = (), namespace: str | None = None
    ) -> MultiHopResult:
        """Answer a multi-hop question step by step: each step from the edit in scope of it (its new object,
        exactly) or from the base model. `steps` are single-hop clozes or questions in order, "#k" standing for
        step k's answer ("The capital of #1 is"); without them the served model plans the steps itself."""
        request = pb.AnswerMultiHopRequest(namespace=self._ns(namespace), question=question, steps=list(steps))
        with map_rpc_errors():
            response = self._inference.AnswerMultiHop(request, **self._call_kwargs())
        return convert.multihop_result(response)

    def server_info(self) -> ServerInfo:
        with map_rpc_errors():
            r = self._inference.GetServerInfo(pb.GetServerInfoRequest(), **self._call_kwargs())
        return convert.server_info(r)

    # --- parametric editing (admin) ------------------------------------------

    def apply_parametric(
        self,
        method: str,
        edit_ids: Sequence[str],
        *,
        options: ParametricOptions = _METHOD_DEFAULTS,
        on_progress: Callable[[ParametricProgress], None] | None = None,
        namespace: str | None = None,
        timeout_s: float | None = None,
    ) -> ParametricResult:
        """Write stored edits into the served model's weights with a method ("rome", "memit", "ft", "alphaedit").

        Returns once the weights have changed; `on_progress` sees each step. No deadline unless
        `timeout_s` is given: MEMIT on many edits takes minutes.
        """
        if method not in convert.METHOD_VALUES:
            raise ValueError(f"method must be one of {', '.join(convert.METHOD_VALUES)}, got {method!r}")
        request = parametric_pb.ApplyParametricRequest(
            namespace=self._ns(namespace), method=convert.METHOD_VALUES[method], edit_ids=list(edit_ids),
            options=convert.parametric_options_to_pb(options),
        )
        result = None
        with map_rpc_errors():
            for event in self._parametric.ApplyParametric(request, timeout=timeout_s, metadata=self._metadata or None):
                if event.HasField("progress") and on_progress is not None:
                    on_progress(convert.parametric_progress(event.progress))
                elif event.HasField("result"):
                    result = event.result
        if result is None:
            raise Internal("ApplyParametric ended without a result")
        baked = tuple(convert.baked_record(b) for b in result.edits)
        return ParametricResult(result.application_id, baked, result.seconds)

    def rollback_parametric(self, edit_id: str, *, namespace: str | None = None) -> BakedEditRecord:
        """Take one edit out of the weights; they return exactly to what they were without it."""
        request = parametric_pb.RollbackParametricRequest(namespace=self._ns(namespace), edit_id=edit_id)
        with map_rpc_errors():
            response = self._parametric.RollbackParametric(request, **self._call_kwargs())
        return convert.baked_record(response.rolled_back)

    def baked_edits(self, *, namespace: str | None = None) -> list[BakedEditRecord]:
        """The namespace's edits that are in the weights, in the order they were applied."""
        request = parametric_pb.ListBakedEditsRequest(namespace=self._ns(namespace))
        with map_rpc_errors():
            response = self._parametric.ListBakedEdits(request, **self._call_kwargs())
        return [convert.baked_record(b) for b in response.edits]

    def export_model(self, path: str) -> str:
        """Write the served (edited) model as a Hugging Face directory at `path` on the server's machine."""
        with map_rpc_errors():
            response = self._parametric.ExportModel(
                parametric_pb.ExportModelRequest(path=path), **self._call_kwargs()
            )
        return response.path

    def attribute(
        self, prompt: str, answer: str, *, layers: Sequence[int] = (), top: int = 10, steps: int | None = None,
    ) -> AttributionResult:
        """The FFN neurons per layer that integrated gradients credit with `answer`'s first token after `prompt`, on
        the served model (KN's attribution; `layers` empty: KN's default layers). Reads, changes nothing."""
        request = parametric_pb.AttributeRequest(prompt=prompt, answer=answer, layers=list(layers), top=top,
                                                 steps=steps or 0)
        with map_rpc_errors():
            response = self._parametric.Attribute(request, **self._call_kwargs())
        return convert.attribution_result(response)

    # --- chat ------------------------------------------------------------

    def chat(
        self, turns: Sequence[ChatTurn | Mapping[str, str]], *, options: GenerationOptions = _SERVER_DEFAULTS,
        route: str | None = None, edit_id: str | None = None, namespace: str | None = None,
    ) -> ChatStream:
        """Answer the conversation's last turn (the user's) through the gate; iterate the result for the reply.

        `turns` are ChatTurn or {"role": ..., "content": ...} mappings, oldest first. Once iterated, `.result`
        holds the reply and says which route answered, from which edit, with what gate score. Options and
        `route` are as for `generate`.
        """
        request = chat_pb.ChatRequest(
            namespace=self._ns(namespace), turns=[convert.chat_turn(t) for t in turns],
            options=convert.generation_options(options), route=convert.route_value(route),
            edit_id=edit_id or "",
        )
        with map_rpc_errors():
            call = self._chat.Chat(request, **self._call_kwargs())
        return ChatStream(call)

    def correct(
        self,
        question: str,
        answer: str,
        text: str | None = None,
        *,
        edit: EditInput | None = None,
        dry_run: bool = False,
        namespace: str | None = None,
    ) -> Correction:
        """Correct the model's `answer` to `question` with free `text` ("No, it is in Taipei") or an `edit`.

        The server stores the edit in the namespace (unless `dry_run`), with the question among its
        paraphrases; it holds from the next turn. Free text the server cannot read unambiguously raises
        FailedPrecondition, whose details say what is missing.
        """
        if (text is None) == (edit is None):
            raise ValueError("give exactly one of text (a free-text correction) or edit (an EditInput)")
        request = chat_pb.CorrectRequest(
            namespace=self._ns(namespace), question=question, answer=answer, dry_run=dry_run
        )
        if edit is not None:
            request.edit.CopyFrom(convert.edit_spec(edit))
        else:
            request.text = text or ""
        with map_rpc_errors():
            response = self._chat.Correct(request, **self._call_kwargs())
        return Correction(convert.edit_record(response.edit), response.stored, tuple(response.extraction))

    # --- health ----------------------------------------------------------

    def health(self, service: str = "") -> str:
        """The server's grpc.health.v1 status name: "SERVING", "NOT_SERVING", ..."""
        return self._check_health(service, self._timeout_s)

    def wait_ready(self, timeout_s: float = 30.0, *, service: str = "") -> None:
        """Poll health until SERVING; raises DeadlineExceeded after `timeout_s` seconds.

        UNAVAILABLE (not listening yet) and NOT_SERVING are retried; any other
        error, such as UNAUTHENTICATED, is raised at once.
        """
        deadline = time.monotonic() + timeout_s
        delay_s = 0.05
        last = "no answer"
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise DeadlineExceeded(
                    f"server at {self._addr} not SERVING after {timeout_s:g} s (last: {last})"
                )
            try:
                last = self._check_health(service, min(remaining_s, 5.0))
                if last == "SERVING":
                    return
            except (Unavailable, DeadlineExceeded) as exc:
                last = str(exc)
            time.sleep(min(delay_s, max(deadline - time.monotonic(), 0.0)))
            delay_s = min(delay_s * 2, 1.0)

    # --- lifetime --------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EditcacheClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EditcacheClient({self._addr!r}, namespace={self._namespace!r})"

    # --- helpers ---------------------------------------------------------

    def _ns(self, namespace: str | None) -> str:
        return self._namespace if namespace is None else namespace

    def _generate_request(
        self, prompt: str, options: GenerationOptions, route: str | None, edit_id: str | None,
        namespace: str | None,
    ) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            namespace=self._ns(namespace), prompt=prompt, options=convert.generation_options(options),
            route=convert.route_value(route), edit_id=edit_id or "",
        )

    def _call_kwargs(self, timeout_s: float | None = None) -> dict[str, Any]:
        return {
            "timeout": self._timeout_s if timeout_s is None else timeout_s,
            "metadata": self._metadata or None,
        }

    def _check_health(self, service: str, timeout_s: float | None) -> str:
        with map_rpc_errors():
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), **self._call_kwargs(timeout_s)
            )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
