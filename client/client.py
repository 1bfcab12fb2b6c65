"""EditcacheClient: a typed, synchronous client for the editcache.v1 API.

Callers see plain frozen dataclasses, never protobuf messages, and
`client.errors` exceptions, never a bare `grpc.RpcError`.

    with EditcacheClient("127.0.0.1:50051", namespace="demo") as ec:
        ec.wait_ready(timeout_s=60)
        edit = ec.add_edit("Space Needle", "The Space Needle is located in the city of", "Taipei")
        answer = ec.generate("Where is the Space Needle?", max_new_tokens=8)
        print(answer.text, answer.route, answer.edit_id == edit.id)

        stream = ec.stream("The Space Needle is in")
        for delta in stream:
            print(delta, end="", flush=True)
        print(stream.result.route)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.errors import DeadlineExceeded, Internal, Unavailable, map_rpc_errors
from editcache.v1 import chat_pb2 as chat_pb
from editcache.v1 import chat_pb2_grpc as chat_pb_grpc
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from editcache.v1 import parametric_pb2 as parametric_pb
from editcache.v1 import parametric_pb2_grpc as parametric_pb_grpc

DEFAULT_ADDR = "127.0.0.1:50051"
DEFAULT_NAMESPACE = "default"

# ROUTE_COUNTERFACTUAL -> "counterfactual"; built from the enum so new routes need no change here.
_ROUTE_NAMES: dict[int, str] = {v: n.removeprefix("ROUTE_").lower() for n, v in pb.Route.items()}
_FINISH_NAMES: dict[int, str] = {
    v: n.removeprefix("FINISH_REASON_").lower() for n, v in pb.FinishReason.items()
}
_ROUTE_VALUES: dict[str, pb.Route] = {n.removeprefix("ROUTE_").lower(): v for n, v in pb.Route.items()}
_TIMING_FIELDS = ("embed", "search", "gate", "queue", "generate", "total")
_METHOD_VALUES: dict[str, parametric_pb.ParametricMethod] = {
    n.removeprefix("PARAMETRIC_METHOD_").lower(): v for n, v in parametric_pb.ParametricMethod.items() if v
}
_METHOD_NAMES: dict[int, str] = {int(v): n for n, v in _METHOD_VALUES.items()}


@dataclass(frozen=True)
class EditInput:
    """A fact to register: an edit without the server-set fields."""

    subject: str
    prompt: str
    target_new: str
    target_true: str | None = None
    paraphrases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.paraphrases, str):
            raise TypeError("paraphrases must be a sequence of strings, not one string")
        object.__setattr__(self, "paraphrases", tuple(self.paraphrases))


@dataclass(frozen=True)
class EditRecord:
    """A stored edit, as the server returned it."""

    id: str
    namespace: str
    subject: str
    prompt: str
    target_new: str
    target_true: str | None
    paraphrases: tuple[str, ...]
    created_at_unix_s: float


@dataclass(frozen=True)
class GenerationResult:
    """An answer and why it was given.

    `route` is "base", "counterfactual", "ike", "parametric" or "prompt";
    `edit_id` is None on the base route; `timings_ms` has the keys embed,
    search, gate, queue, generate and total; `finish_reason` is "length",
    "eos" or "stop".
    """

    text: str
    route: str
    edit_id: str | None
    gate_score: float
    timings_ms: dict[str, float]
    token_ids: tuple[int, ...]
    finish_reason: str
    abstained: bool = False  # the gate let it in, the counterfactual model handed it to the base model


@dataclass(frozen=True)
class ScoreResult:
    """Teacher-forced scores of a continuation: per target token, the model's argmax and log-probability."""

    route: str
    edit_id: str | None
    gate_score: float
    target_ids: tuple[int, ...]
    predicted_ids: tuple[int, ...]
    target_logprobs: tuple[float, ...]
    timings_ms: dict[str, float]
    abstained: bool = False  # as in GenerationResult

    @property
    def token_accuracy(self) -> float:
        """Share of target tokens that are the model's argmax (EasyEdit's rewrite_acc)."""
        hits = sum(t == p for t, p in zip(self.target_ids, self.predicted_ids, strict=True))
        return hits / len(self.target_ids)


@dataclass(frozen=True)
class ServerInfo:
    model: str
    model_type: str
    parameters: int
    encoder: str
    gate: str
    threshold: float
    top_k: int
    in_scope_route: str
    routes: tuple[str, ...]
    version: str
    model_fingerprint: str = ""
    degraded: tuple[str, ...] = ()  # a sentence per default part the server could not use, and what answers instead


@dataclass(frozen=True)
class EditPage:
    """One page of a namespace's edits, oldest first."""

    edits: tuple[EditRecord, ...]
    next_page_token: str  # empty on the last page
    total: int  # edits in the namespace


@dataclass(frozen=True)
class ChatTurn:
    """One turn of a conversation: role "system" (first turn only), "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatResult:
    """A chat answer and why it was given.

    `reply` is the assistant's turn (send it back as the next request's assistant turn); `generation` is the
    raw continuation with its route, edit id, gate score, token ids and timings; `edit` is the edit that
    answered (None on the base route); `prompt` is the conversation as the model read it; `gate_query` the
    text the gate scored (the latest user turn, or it after the previous exchange for a follow-up).
    """

    reply: str
    generation: GenerationResult
    edit: EditRecord | None
    prompt: str
    gate_query: str

    @property
    def route(self) -> str:
        return self.generation.route

    @property
    def edit_id(self) -> str | None:
        return self.generation.edit_id

    @property
    def gate_score(self) -> float:
        return self.generation.gate_score


@dataclass(frozen=True)
class Correction:
    """A correction as the server read it: the edit it stored (or, with dry_run, would store)."""

    edit: EditRecord  # id "" when not stored
    stored: bool
    extraction: tuple[str, ...]  # free-text corrections: the extraction model's raw outputs


R = TypeVar("R")


class ResultStream(Generic[R]):
    """Text deltas of a streamed answer; `.result` is set once iteration ends.

    Iterate it once. Leaving the loop early (or leaving a `with` block)
    cancels the RPC; `.result` then stays None.
    """

    def __init__(self, call: Any, to_result: Callable[[Any], R]) -> None:
        self._call = call  # the grpc response iterator, also a grpc.Call
        self._to_result = to_result  # the final message's result field -> R
        self._started = False
        self.result: R | None = None

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError(f"a {type(self).__name__} can be iterated only once")
        self._started = True
        try:
            with map_rpc_errors():
                for message in self._call:
                    if message.text_delta:
                        yield message.text_delta
                    if message.HasField("final"):
                        self.result = self._to_result(message.final)
        finally:
            if self.result is None:
                self._call.cancel()
        if self.result is None:
            raise Internal("the server closed the stream without a final response")

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.result is None:
            self._call.cancel()


class GenerationStream(ResultStream[GenerationResult]):
    """The text of a streamed `generate`; `.result` is its GenerationResult."""

    def __init__(self, call: Any) -> None:
        super().__init__(call, _generation_result)


class ChatStream(ResultStream[ChatResult]):
    """The reply of a streamed `chat`; `.result` is its ChatResult."""

    def __init__(self, call: Any) -> None:
        super().__init__(call, _chat_result)


@dataclass(frozen=True)
class ParametricProgress:
    stage: str  # "prefixes", "statistics", "value", "fine-tune", "layer"
    step: int
    total: int
    loss: float | None
    edit_id: str | None


@dataclass(frozen=True)
class BakedEditRecord:
    """An edit whose deltas are in the served model's weights."""

    namespace: str
    edit_id: str
    method: str
    application_id: int
    modules: tuple[str, ...]
    in_gate: bool
    created_at_unix_s: float


@dataclass(frozen=True)
class ParametricResult:
    application_id: int
    edits: tuple[BakedEditRecord, ...]
    seconds: float


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

    def add_edits(self, specs: Sequence[EditInput], *, namespace: str | None = None) -> list[EditRecord]:
        """Store the edits, all or none; returns them in request order."""
        request = pb.AddEditsRequest(namespace=self._ns(namespace), edits=[_edit_spec(s) for s in specs])
        with map_rpc_errors():
            response = self._edits.AddEdits(request, **self._call_kwargs())
        return [_edit_record(e) for e in response.edits]

    def add_edit(
        self,
        subject: str,
        prompt: str,
        target_new: str,
        *,
        target_true: str | None = None,
        paraphrases: Sequence[str] = (),
        namespace: str | None = None,
    ) -> EditRecord:
        spec = EditInput(subject, prompt, target_new, target_true, tuple(paraphrases))
        (record,) = self.add_edits([spec], namespace=namespace)
        return record

    def get_edit(self, id: str, *, namespace: str | None = None) -> EditRecord:
        request = pb.GetEditRequest(namespace=self._ns(namespace), id=id)
        with map_rpc_errors():
            response = self._edits.GetEdit(request, **self._call_kwargs())
        return _edit_record(response.edit)

    def list_edits(
        self, page_size: int = 0, page_token: str = "", *, namespace: str | None = None
    ) -> EditPage:
        """One page of edits; `page_size` 0 means the server's default."""
        request = pb.ListEditsRequest(
            namespace=self._ns(namespace), page_size=page_size, page_token=page_token
        )
        with map_rpc_errors():
            response = self._edits.ListEdits(request, **self._call_kwargs())
        return EditPage(
            edits=tuple(_edit_record(e) for e in response.edits),
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
        """Delete an edit; returns it as it was before deletion."""
        request = pb.DeleteEditRequest(namespace=self._ns(namespace), id=id)
        with map_rpc_errors():
            response = self._edits.DeleteEdit(request, **self._call_kwargs())
        return _edit_record(response.edit)

    # --- inference -------------------------------------------------------

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 0,
        temperature: float = 0.0,
        top_p: float = 0.0,
        stop: Iterable[str] = (),
        seed: int | None = None,
        route: str | None = None,
        edit_id: str | None = None,
        namespace: str | None = None,
    ) -> GenerationResult:
        """Answer a prompt through the gate. Zero options mean the server's defaults (greedy).

        `route` ("base", "prompt", …) bypasses the gate, for evaluation; an in-scope route answers
        from `edit_id`, or from the best retrieved edit when it is None.
        """
        request = self._generate_request(
            prompt, namespace, route, edit_id, _options(max_new_tokens, temperature, top_p, stop, seed)
        )
        with map_rpc_errors():
            response = self._inference.Generate(request, **self._call_kwargs())
        return _generation_result(response)

    def stream(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 0,
        temperature: float = 0.0,
        top_p: float = 0.0,
        stop: Iterable[str] = (),
        seed: int | None = None,
        route: str | None = None,
        edit_id: str | None = None,
        namespace: str | None = None,
    ) -> GenerationStream:
        """Like `generate`, but iterate the result for text deltas as they arrive."""
        request = self._generate_request(
            prompt, namespace, route, edit_id, _options(max_new_tokens, temperature, top_p, stop, seed)
        )
        with map_rpc_errors():
            call = self._inference.GenerateStream(request, **self._call_kwargs())
        return GenerationStream(call)

    def score(
        self,
        prompt: str,
        target: str,
        *,
        route: str | None = None,
        edit_id: str | None = None,
        namespace: str | None = None,
    ) -> ScoreResult:
        """Teacher-forced scores of `target` as the continuation of `prompt` (e.g. " Taipei"), through the gate."""
        request = pb.ScoreRequest(
            namespace=self._ns(namespace), prompt=prompt, target=target,
            route=_route_value(route), edit_id=edit_id or "",
        )
        with map_rpc_errors():
            response = self._inference.Score(request, **self._call_kwargs())
        return ScoreResult(
            route=_ROUTE_NAMES.get(response.route, "unspecified"),
            edit_id=response.edit_id or None,
            gate_score=response.gate_score,
            target_ids=tuple(response.target_ids),
            predicted_ids=tuple(response.predicted_ids),
            target_logprobs=tuple(response.target_logprobs),
            timings_ms=_timings_ms(response.timings),
            abstained=response.abstained,
        )

    def server_info(self) -> ServerInfo:
        with map_rpc_errors():
            r = self._inference.GetServerInfo(pb.GetServerInfoRequest(), **self._call_kwargs())
        return ServerInfo(
            model=r.model, model_type=r.model_type, parameters=r.parameters, encoder=r.encoder, gate=r.gate,
            threshold=r.threshold, top_k=r.top_k, in_scope_route=_ROUTE_NAMES.get(r.in_scope_route, "unspecified"),
            routes=tuple(_ROUTE_NAMES.get(x, "unspecified") for x in r.routes), version=r.version,
            model_fingerprint=r.model_fingerprint, degraded=tuple(r.degraded),
        )

    # --- parametric editing (admin) ------------------------------------------

    def apply_parametric(
        self,
        method: str,
        edit_ids: Sequence[str],
        *,
        layer: int | None = None,
        layers: Sequence[int] = (),
        steps: int | None = None,
        lr: float | None = None,
        mom2_weight: float | None = None,
        norm_constraint: float | None = None,
        remove_from_gate: bool = False,
        on_progress: Callable[[ParametricProgress], None] | None = None,
        namespace: str | None = None,
        timeout_s: float | None = None,
    ) -> ParametricResult:
        """Write stored edits into the served model's weights with "rome", "memit" or "ft".

        Returns once the weights have changed; `on_progress` sees each step. No deadline unless
        `timeout_s` is given: MEMIT on many edits takes minutes.
        """
        if method not in _METHOD_VALUES:
            raise ValueError(f"method must be one of {', '.join(_METHOD_VALUES)}, got {method!r}")
        options = parametric_pb.ParametricOptions(
            layer=layer, layers=list(layers), steps=steps, lr=lr, mom2_weight=mom2_weight,
            norm_constraint=norm_constraint, remove_from_gate=remove_from_gate,
        )
        request = parametric_pb.ApplyParametricRequest(
            namespace=self._ns(namespace), method=_METHOD_VALUES[method], edit_ids=list(edit_ids), options=options,
        )
        result = None
        with map_rpc_errors():
            for event in self._parametric.ApplyParametric(request, timeout=timeout_s, metadata=self._metadata or None):
                if event.HasField("progress") and on_progress is not None:
                    p = event.progress
                    on_progress(ParametricProgress(
                        p.stage, p.step, p.total, p.loss if p.HasField("loss") else None, p.edit_id or None
                    ))
                elif event.HasField("result"):
                    result = event.result
        if result is None:
            raise Internal("ApplyParametric ended without a result")
        return ParametricResult(result.application_id, tuple(_baked(b) for b in result.edits), result.seconds)

    def rollback_parametric(self, edit_id: str, *, namespace: str | None = None) -> BakedEditRecord:
        """Take one edit out of the weights; they return exactly to what they were without it."""
        request = parametric_pb.RollbackParametricRequest(namespace=self._ns(namespace), edit_id=edit_id)
        with map_rpc_errors():
            response = self._parametric.RollbackParametric(request, **self._call_kwargs())
        return _baked(response.rolled_back)

    def baked_edits(self, *, namespace: str | None = None) -> list[BakedEditRecord]:
        """The namespace's edits that are in the weights, in the order they were applied."""
        request = parametric_pb.ListBakedEditsRequest(namespace=self._ns(namespace))
        with map_rpc_errors():
            response = self._parametric.ListBakedEdits(request, **self._call_kwargs())
        return [_baked(b) for b in response.edits]

    def export_model(self, path: str) -> str:
        """Write the served (edited) model as a Hugging Face directory at `path` on the server's machine."""
        with map_rpc_errors():
            response = self._parametric.ExportModel(
                parametric_pb.ExportModelRequest(path=path), **self._call_kwargs()
            )
        return response.path

    # --- chat ------------------------------------------------------------

    def chat(
        self,
        turns: Sequence[ChatTurn | Mapping[str, str]],
        *,
        max_new_tokens: int = 0,
        temperature: float = 0.0,
        top_p: float = 0.0,
        stop: Iterable[str] = (),
        seed: int | None = None,
        route: str | None = None,
        edit_id: str | None = None,
        namespace: str | None = None,
    ) -> ChatStream:
        """Answer the conversation's last turn (the user's) through the gate; iterate the result for the reply.

        `turns` are ChatTurn or {"role": ..., "content": ...} mappings, oldest first. Once iterated, `.result`
        holds the reply and says which route answered, from which edit, with what gate score. Options and
        `route` are as for `generate`.
        """
        request = chat_pb.ChatRequest(
            namespace=self._ns(namespace), turns=[_turn(t) for t in turns],
            options=_options(max_new_tokens, temperature, top_p, stop, seed), route=_route_value(route),
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
            request.edit.CopyFrom(_edit_spec(edit))
        else:
            request.text = text or ""
        with map_rpc_errors():
            response = self._chat.Correct(request, **self._call_kwargs())
        return Correction(_edit_record(response.edit), response.stored, tuple(response.extraction))

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
        self, prompt: str, namespace: str | None, route: str | None, edit_id: str | None,
        options: pb.GenerationOptions,
    ) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            namespace=self._ns(namespace), prompt=prompt, options=options, route=_route_value(route),
            edit_id=edit_id or "",
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


# --- conversions at the edge ---------------------------------------------


def _baked(b: parametric_pb.BakedEdit) -> BakedEditRecord:
    return BakedEditRecord(
        namespace=b.namespace, edit_id=b.edit_id, method=_METHOD_NAMES.get(b.method, "unspecified"),
        application_id=b.application_id, modules=tuple(b.modules), in_gate=b.in_gate,
        created_at_unix_s=b.created_at_unix_s,
    )


def _edit_spec(spec: EditInput) -> pb.EditSpec:
    message = pb.EditSpec(
        subject=spec.subject,
        prompt=spec.prompt,
        target_new=spec.target_new,
        paraphrases=list(spec.paraphrases),
    )
    if spec.target_true is not None:
        message.target_true = spec.target_true
    return message


def _edit_record(edit: pb.Edit) -> EditRecord:
    return EditRecord(
        id=edit.id,
        namespace=edit.namespace,
        subject=edit.subject,
        prompt=edit.prompt,
        target_new=edit.target_new,
        target_true=edit.target_true if edit.HasField("target_true") else None,
        paraphrases=tuple(edit.paraphrases),
        created_at_unix_s=edit.created_at_unix_s,
    )


def _options(
    max_new_tokens: int, temperature: float, top_p: float, stop: Iterable[str], seed: int | None
) -> pb.GenerationOptions:
    if isinstance(stop, str):
        raise TypeError("stop must be a sequence of strings, not one string")
    options = pb.GenerationOptions(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=list(stop)
    )
    if seed is not None:
        options.seed = seed
    return options


def _route_value(route: str | None) -> pb.Route:
    if route is None:
        return pb.ROUTE_UNSPECIFIED
    try:
        return _ROUTE_VALUES[route]
    except KeyError:
        raise ValueError(f"unknown route {route!r}; use one of {sorted(_ROUTE_VALUES)}") from None


def _timings_ms(timings: pb.Timings) -> dict[str, float]:
    return {name: getattr(timings, f"{name}_ms") for name in _TIMING_FIELDS}


def _turn(turn: ChatTurn | Mapping[str, str]) -> chat_pb.Turn:
    if isinstance(turn, ChatTurn):
        return chat_pb.Turn(role=turn.role, content=turn.content)
    if isinstance(turn, Mapping):
        return chat_pb.Turn(role=turn["role"], content=turn["content"])
    raise TypeError(f"a turn must be a ChatTurn or a mapping with role and content, not {type(turn).__name__}")


def _chat_result(result: chat_pb.ChatResult) -> ChatResult:
    return ChatResult(
        reply=result.reply,
        generation=_generation_result(result.generation),
        edit=_edit_record(result.edit) if result.HasField("edit") else None,
        prompt=result.prompt,
        gate_query=result.gate_query,
    )


def _generation_result(response: pb.GenerateResponse) -> GenerationResult:
    return GenerationResult(
        text=response.text,
        route=_ROUTE_NAMES.get(response.route, "unspecified"),
        edit_id=response.edit_id or None,
        gate_score=response.gate_score,
        timings_ms=_timings_ms(response.timings),
        token_ids=tuple(response.token_ids),
        finish_reason=_FINISH_NAMES.get(response.finish_reason, "unspecified"),
        abstained=response.abstained,
    )


__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_NAMESPACE",
    "BakedEditRecord",
    "ChatResult",
    "ChatStream",
    "ChatTurn",
    "Correction",
    "EditInput",
    "EditPage",
    "EditRecord",
    "EditcacheClient",
    "GenerationResult",
    "GenerationStream",
    "ParametricProgress",
    "ParametricResult",
    "ResultStream",
    "ScoreResult",
    "ServerInfo",
]
