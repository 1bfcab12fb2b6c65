"""Wire messages to plain records and back: the only module below the servicers that knows protobufs."""

from __future__ import annotations

from editcache.v1 import editcache_pb2 as pb
from server.engine import ServerInfo
from server.errors import InvalidArgument
from server.types import Answer, Decision, Edit, EditSpec, FinishReason, GenerationOptions, Route, Timings, TokenScores

ROUTES = {
    Route.BASE: pb.ROUTE_BASE,
    Route.COUNTERFACTUAL: pb.ROUTE_COUNTERFACTUAL,
    Route.IKE: pb.ROUTE_IKE,
    Route.PARAMETRIC: pb.ROUTE_PARAMETRIC,
    Route.PROMPT: pb.ROUTE_PROMPT,
}
ROUTES_FROM_PB = {v: k for k, v in ROUTES.items()}
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
    )


def edit_to_pb(edit: Edit) -> pb.Edit:
    msg = pb.Edit(
        id=edit.id, namespace=edit.namespace, subject=edit.subject, prompt=edit.prompt,
        target_new=edit.target_new, paraphrases=list(edit.paraphrases),
        created_at_unix_s=edit.created_at_unix_s,
    )
    if edit.target_true is not None:
        msg.target_true = edit.target_true
    return msg


def options_from_pb(msg: pb.GenerationOptions, default_max_new_tokens: int) -> GenerationOptions:
    return GenerationOptions(
        max_new_tokens=msg.max_new_tokens or default_max_new_tokens,
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
    )


def route_from_pb(value: int) -> Route | None:
    """None for ROUTE_UNSPECIFIED (the gate decides)."""
    if value == pb.ROUTE_UNSPECIFIED:
        return None
    if value not in ROUTES_FROM_PB:
        raise InvalidArgument(f"route {value} is not a known Route; use one of {sorted(ROUTES_FROM_PB)}")
    return ROUTES_FROM_PB[value]  # type: ignore[index]  # an int checked above


def scores_to_pb(scores: TokenScores, decision: Decision, timings: Timings) -> pb.ScoreResponse:
    return pb.ScoreResponse(
        route=ROUTES[decision.route],
        edit_id=decision.edit.id if decision.edit else "",
        gate_score=decision.score,
        target_ids=list(scores.target_ids),
        predicted_ids=list(scores.predicted_ids),
        target_logprobs=list(scores.target_logprobs),
        timings=timings_to_pb(timings),
        abstained=decision.abstained,
    )


def server_info_to_pb(info: ServerInfo) -> pb.GetServerInfoResponse:
    return pb.GetServerInfoResponse(
        model=info.model, model_type=info.model_type, parameters=info.parameters, encoder=info.encoder,
        gate=info.gate, threshold=info.threshold, top_k=info.top_k, in_scope_route=ROUTES[info.in_scope_route],
        routes=[ROUTES[r] for r in info.routes], version=info.version, model_fingerprint=info.model_fingerprint,
        degraded=list(info.degraded),
    )
