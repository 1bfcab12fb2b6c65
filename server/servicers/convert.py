"""Wire messages to the core's records and back: the one place that knows protobufs.

Conversion only: the use-case layer validates (ranges, limits, required fields) and applies defaults.
"""

from __future__ import annotations

from editcache.v1 import chat_pb2 as chat_pb
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import parametric_pb2 as parametric_pb
from server.chat.transcript import Turn
from server.errors import InvalidArgument
from server.parametric.editor import MethodRequest
from server.parametric.kn import AttributionReport
from server.parametric.ledger import BakedEdit
from server.parametric.targets import Progress
from server.service import ServerInfo
from server.service.answers import ChainQuery, ChatAnswer, ChatQuery, FollowedChain, Scored
from server.service.edits import Correction, CorrectionRequest
from server.service.parametric import Application
from server.types import (
    Answer,
    Edit,
    EditEvent,
    EditKind,
    EditSpec,
    FinishReason,
    GenerationOptions,
    Query,
    Route,
    Timings,
)

ROUTES = {
    Route.BASE: pb.ROUTE_BASE,
    Route.COUNTERFACTUAL: pb.ROUTE_COUNTERFACTUAL,
    Route.IKE: pb.ROUTE_IKE,
    Route.PARAMETRIC: pb.ROUTE_PARAMETRIC,
    Route.PROMPT: pb.ROUTE_PROMPT,
    Route.REVERSE: pb.ROUTE_REVERSE,
}
ROUTES_FROM_PB = {v: k for k, v in ROUTES.items()}
EDIT_KINDS = {
    EditKind.MODIFY: pb.EDIT_KIND_MODIFY,
    EditKind.INSERT: pb.EDIT_KIND_INSERT,
    EditKind.ERASE: pb.EDIT_KIND_ERASE,
    EditKind.PATCH: pb.EDIT_KIND_PATCH,
    EditKind.REGEX: pb.EDIT_KIND_REGEX,
}
EDIT_KINDS_FROM_PB = {v: k for k, v in EDIT_KINDS.items()} | {pb.EDIT_KIND_UNSPECIFIED: EditKind.MODIFY}
FINISH_REASONS = {
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.EOS: pb.FINISH_REASON_EOS,
    FinishReason.STOP: pb.FINISH_REASON_STOP,
}


def edit_spec_from_pb(msg: pb.EditSpec) -> EditSpec:
    return EditSpec(
        subject=msg.subject,
        prompt=msg.prompt,
        target_new=msg.target_new,
        target_true=msg.target_true if msg.HasField("target_true") else None,
        paraphrases=tuple(msg.paraphrases),
        kind=edit_kind_from_pb(msg.kind),
        pattern=msg.pattern,
        replacement=msg.replacement,
        aliases=tuple(msg.aliases),
    )


def edit_kind_from_pb(value: int) -> EditKind:
    if value not in EDIT_KINDS_FROM_PB:
        raise InvalidArgument(f"kind {value} is not a known EditKind; use one of {sorted(EDIT_KINDS_FROM_PB)}")
    return EDIT_KINDS_FROM_PB[value]  # type: ignore[index]  # an int checked above


def edit_to_pb(edit: Edit) -> pb.Edit:
    msg = pb.Edit(
        id=edit.id, namespace=edit.namespace, subject=edit.subject, prompt=edit.prompt,
        target_new=edit.target_new, paraphrases=list(edit.paraphrases),
        created_at_unix_s=edit.created_at_unix_s, kind=EDIT_KINDS[edit.kind], pattern=edit.pattern,
        replacement=edit.replacement, version=edit.version, supersedes=edit.supersedes,
        superseded_by=edit.superseded_by, updated_at_unix_s=edit.updated_at_unix_s, aliases=list(edit.aliases),
    )
    if edit.target_true is not None:
        msg.target_true = edit.target_true
    return msg


def edit_event_to_pb(event: EditEvent) -> pb.EditEvent:
    return pb.EditEvent(
        seq=event.seq, at_unix_s=event.at_unix_s, namespace=event.namespace, token_name=event.token_name,
        action=pb.EditAction.Value(f"EDIT_ACTION_{event.action.name}"), edit_id=event.edit_id,
        before_json=event.before_json, after_json=event.after_json,
    )


def options_from_pb(msg: pb.GenerationOptions) -> GenerationOptions:
    return GenerationOptions(
        max_new_tokens=msg.max_new_tokens,  # 0: the server's default
        temperature=msg.temperature,
        top_p=msg.top_p or 1.0,
        stop=tuple(msg.stop),
        seed=msg.seed if msg.HasField("seed") else None,
    )


def timings_to_pb(t: Timings) -> pb.Timings:
    return pb.Timings(
        embed_ms=t.embed_ms, search_ms=t.search_ms, gate_ms=t.gate_ms,
        queue_ms=t.queue_ms, generate_ms=t.generate_ms, total_ms=t.total_ms,
    )


def answer_to_pb(answer: Answer) -> pb.GenerateResponse:
    decision = answer.decision
    return pb.GenerateResponse(
        text=answer.generation.text,
        route=ROUTES[decision.route],
        edit_id=decision.edit.id if decision.edit else "",
        gate_score=decision.score,
        timings=timings_to_pb(answer.timings),
        token_ids=list(answer.generation.token_ids),
        finish_reason=FINISH_REASONS[answer.generation.finish_reason],
        abstained=decision.abstained,
        related_edit_ids=[e.id for e in decision.related],
    )


def route_from_pb(value: int) -> Route | None:
    """None for ROUTE_UNSPECIFIED (the gate decides)."""
    if value == pb.ROUTE_UNSPECIFIED:
        return None
    if value not in ROUTES_FROM_PB:
        raise InvalidArgument(f"route {value} is not a known Route; use one of {sorted(ROUTES_FROM_PB)}")
    return ROUTES_FROM_PB[value]  # type: ignore[index]  # an int checked above


def query_from_pb(request: pb.GenerateRequest | pb.ScoreRequest) -> Query:
    return Query(request.namespace, request.prompt, route_from_pb(request.route), request.edit_id or None)


def chain_query_from_pb(request: pb.AnswerMultiHopRequest) -> ChainQuery:
    return ChainQuery(request.namespace, request.question, tuple(request.steps))


def chain_to_pb(followed: FollowedChain) -> pb.AnswerMultiHopResponse:
    chain = followed.chain
    hops = [pb.Hop(question=h.question, answer=h.answer, route=ROUTES[h.route], edit_id=h.edit.id if h.edit else "",
                   related_edit_ids=[e.id for e in h.related]) for h in chain.hops]
    return pb.AnswerMultiHopResponse(answer=chain.answer, plan=list(chain.plan), hops=hops,
                                     edit_ids=list(chain.edits_used), timings=timings_to_pb(followed.timings))


def scored_to_pb(scored: Scored) -> pb.ScoreResponse:
    scores, decision = scored.scores, scored.decision
    return pb.ScoreResponse(
        route=ROUTES[decision.route],
        edit_id=decision.edit.id if decision.edit else "",
        gate_score=decision.score,
        target_ids=list(scores.target_ids),
        predicted_ids=list(scores.predicted_ids),
        target_logprobs=list(scores.target_logprobs),
        timings=timings_to_pb(scored.timings),
        abstained=decision.abstained,
        related_edit_ids=[e.id for e in decision.related],
    )


def server_info_to_pb(info: ServerInfo) -> pb.GetServerInfoResponse:
    return pb.GetServerInfoResponse(
        model=info.model, model_type=info.model_type, parameters=info.parameters, encoder=info.encoder,
        gate=info.gate, threshold=info.threshold, top_k=info.top_k, in_scope_route=ROUTES[info.in_scope_route],
        routes=[ROUTES[r] for r in info.routes], version=info.version, model_fingerprint=info.model_fingerprint,
        degraded=list(info.degraded),
    )


# --- ChatService ------------------------------------------------------------------------------------------------


def chat_query_from_pb(request: chat_pb.ChatRequest) -> ChatQuery:
    return ChatQuery(
        namespace=request.namespace, turns=tuple(Turn(t.role, t.content) for t in request.turns),
        route=route_from_pb(request.route), edit_id=request.edit_id or None,
    )


def chat_answer_to_pb(chat: ChatAnswer) -> chat_pb.ChatResult:
    edit = chat.answer.decision.edit
    return chat_pb.ChatResult(
        reply=chat.reply, generation=answer_to_pb(chat.answer), edit=edit_to_pb(edit) if edit else None,
        prompt=chat.prompt, gate_query=chat.gate_query,
    )


def correction_request_from_pb(request: chat_pb.CorrectRequest) -> CorrectionRequest:
    kind = request.WhichOneof("correction")
    return CorrectionRequest(
        namespace=request.namespace, question=request.question, answer=request.answer,
        text=request.text if kind == "text" else None,
        spec=edit_spec_from_pb(request.edit) if kind == "edit" else None, dry_run=request.dry_run,
    )


def correction_to_pb(correction: Correction) -> chat_pb.CorrectResponse:
    return chat_pb.CorrectResponse(
        edit=edit_to_pb(correction.edit), stored=correction.stored, extraction=correction.extraction
    )


# --- ParametricService ------------------------------------------------------------------------------------------

_METHOD_PREFIX = "PARAMETRIC_METHOD_"


def method_from_pb(value: int) -> str:
    """The registry name of a wire method (PARAMETRIC_METHOD_ROME → "rome"); "" for unset or unknown."""
    if value == parametric_pb.PARAMETRIC_METHOD_UNSPECIFIED or value not in parametric_pb.ParametricMethod.values():
        return ""
    return parametric_pb.ParametricMethod.Name(value).removeprefix(_METHOD_PREFIX).lower()


def method_to_pb(name: str) -> parametric_pb.ParametricMethod:
    return parametric_pb.ParametricMethod.Value(_METHOD_PREFIX + name.upper())


def method_request_from_pb(request: parametric_pb.ApplyParametricRequest) -> MethodRequest:
    options = request.options
    return MethodRequest(
        method=method_from_pb(request.method),
        layer=options.layer if options.HasField("layer") else None,
        layers=tuple(options.layers),
        steps=options.steps if options.HasField("steps") else None,
        lr=options.lr if options.HasField("lr") else None,
        mom2_weight=options.mom2_weight if options.HasField("mom2_weight") else None,
        norm_constraint=options.norm_constraint if options.HasField("norm_constraint") else None,
        null_space_cutoff=options.null_space_cutoff if options.HasField("null_space_cutoff") else None,
        deferral_radius=options.deferral_radius if options.HasField("deferral_radius") else None,
        fire_at=options.fire_at if options.HasField("fire_at") else None,
        memory_subjects=options.memory_subjects if options.HasField("memory_subjects") else None,
        own_subject_questions=options.own_subject_questions if options.HasField("own_subject_questions") else None,
        own_subject_tokens=options.own_subject_tokens if options.HasField("own_subject_tokens") else None,
        in_gate=not options.remove_from_gate,
    )


def progress_to_pb(progress: Progress) -> parametric_pb.ParametricProgress:
    return parametric_pb.ParametricProgress(
        stage=progress.stage, step=progress.step, total=progress.total, loss=progress.loss,
        edit_id=progress.edit_id or "",
    )


def baked_to_pb(baked: BakedEdit) -> parametric_pb.BakedEdit:
    return parametric_pb.BakedEdit(
        namespace=baked.namespace, edit_id=baked.edit_id, method=method_to_pb(baked.method),
        application_id=baked.application, modules=list(baked.modules), in_gate=baked.in_gate,
        created_at_unix_s=baked.created_at_unix_s,
    )


def attribution_to_pb(report: AttributionReport) -> parametric_pb.AttributeResponse:
    return parametric_pb.AttributeResponse(
        answer_token=report.answer_token, probability=report.probability,
        layers=[parametric_pb.LayerAttribution(layer=layer.layer, module=layer.module, neurons=[
            parametric_pb.NeuronAttribution(neuron=n.neuron, attribution=n.attribution, activation=n.activation)
            for n in layer.neurons
        ]) for layer in report.layers],
    )


def application_to_pb(application: Application) -> parametric_pb.ApplyParametricResult:
    return parametric_pb.ApplyParametricResult(
        application_id=application.application_id, edits=[baked_to_pb(b) for b in application.edits],
        seconds=application.seconds,
    )
