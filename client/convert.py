"""Conversions at the client's edge: records to protobuf requests, responses back to records.

Enum names come from the generated enums (ROUTE_COUNTERFACTUAL -> "counterfactual"), so a route or
method added to the .proto needs no change here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from client.records import (
    AttributionResult,
    BakedEditRecord,
    ChatResult,
    ChatTurn,
    EditEventRecord,
    EditInput,
    EditRecord,
    GenerationOptions,
    GenerationResult,
    HopResult,
    LayerNeurons,
    MultiHopResult,
    NeuronScore,
    ParametricOptions,
    ParametricProgress,
    ScoreResult,
    ServerInfo,
)
from editcache.v1 import chat_pb2 as chat_pb
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import parametric_pb2 as parametric_pb

_ROUTE_NAMES: dict[int, str] = {v: n.removeprefix("ROUTE_").lower() for n, v in pb.Route.items()}
_ROUTE_VALUES: dict[str, pb.Route] = {n.removeprefix("ROUTE_").lower(): v for n, v in pb.Route.items()}
_KIND_NAMES: dict[int, str] = {v: n.removeprefix("EDIT_KIND_").lower() for n, v in pb.EditKind.items() if v}
_KIND_VALUES: dict[str, pb.EditKind] = {n.removeprefix("EDIT_KIND_").lower(): v for n, v in pb.EditKind.items() if v}
_ACTION_NAMES: dict[int, str] = {v: n.removeprefix("EDIT_ACTION_").lower() for n, v in pb.EditAction.items()}
_FINISH_NAMES: dict[int, str] = {
    v: n.removeprefix("FINISH_REASON_").lower() for n, v in pb.FinishReason.items()
}
_TIMING_FIELDS = ("embed", "search", "gate", "queue", "generate", "total")
METHOD_VALUES: dict[str, parametric_pb.ParametricMethod] = {
    n.removeprefix("PARAMETRIC_METHOD_").lower(): v for n, v in parametric_pb.ParametricMethod.items() if v
}
_METHOD_NAMES: dict[int, str] = {int(v): n for n, v in METHOD_VALUES.items()}


# --- records -> requests ----------------------------------------------------


def edit_spec(spec: EditInput) -> pb.EditSpec:
    message = pb.EditSpec(
        subject=spec.subject,
        prompt=spec.prompt,
        target_new=spec.target_new,
        paraphrases=list(spec.paraphrases),
        kind=_KIND_VALUES[spec.kind],
        pattern=spec.pattern,
        replacement=spec.replacement,
        aliases=list(spec.aliases),
    )
    if spec.target_true is not None:
        message.target_true = spec.target_true
    return message


def generation_options(options: GenerationOptions) -> pb.GenerationOptions:
    message = pb.GenerationOptions(
        max_new_tokens=options.max_new_tokens, temperature=options.temperature, top_p=options.top_p,
        stop=list(options.stop),
    )
    if options.seed is not None:
        message.seed = options.seed
    return message


def route_value(route: str | None) -> pb.Route:
    if route is None:
        return pb.ROUTE_UNSPECIFIED
    try:
        return _ROUTE_VALUES[route]
    except KeyError:
        raise ValueError(f"unknown route {route!r}; use one of {sorted(_ROUTE_VALUES)}") from None


def chat_turn(turn: ChatTurn | Mapping[str, str]) -> chat_pb.Turn:
    if isinstance(turn, ChatTurn):
        return chat_pb.Turn(role=turn.role, content=turn.content)
    if isinstance(turn, Mapping):
        return chat_pb.Turn(role=turn["role"], content=turn["content"])
    raise TypeError(f"a turn must be a ChatTurn or a mapping with role and content, not {type(turn).__name__}")


# --- responses -> records ---------------------------------------------------


def edit_record(edit: pb.Edit, history: Sequence[pb.Edit] = ()) -> EditRecord:
    return EditRecord(
        id=edit.id,
        namespace=edit.namespace,
        subject=edit.subject,
        prompt=edit.prompt,
        target_new=edit.target_new,
        target_true=edit.target_true if edit.HasField("target_true") else None,
        paraphrases=tuple(edit.paraphrases),
        created_at_unix_s=edit.created_at_unix_s,
        kind=_KIND_NAMES.get(edit.kind, "modify"),
        pattern=edit.pattern,
        replacement=edit.replacement,
        version=edit.version,
        supersedes=edit.supersedes,
        superseded_by=edit.superseded_by,
        updated_at_unix_s=edit.updated_at_unix_s,
        aliases=tuple(edit.aliases),
        history=tuple(edit_record(e) for e in history),
    )


def edit_event_record(event: pb.EditEvent) -> EditEventRecord:
    return EditEventRecord(
        seq=event.seq, at_unix_s=event.at_unix_s, namespace=event.namespace, token_name=event.token_name,
        action=_ACTION_NAMES.get(event.action, "unspecified"), edit_id=event.edit_id,
        before=json.loads(event.before_json) if event.before_json else None,
        after=json.loads(event.after_json) if event.after_json else None,
    )


def generation_result(response: pb.GenerateResponse) -> GenerationResult:
    return GenerationResult(
        text=response.text,
        route=_route_name(response.route),
        edit_id=response.edit_id or None,
        gate_score=response.gate_score,
        timings_ms=_timings_ms(response.timings),
        token_ids=tuple(response.token_ids),
        finish_reason=_FINISH_NAMES.get(response.finish_reason, "unspecified"),
        abstained=response.abstained,
        related_edit_ids=tuple(response.related_edit_ids),
    )


def multihop_result(response: pb.AnswerMultiHopResponse) -> MultiHopResult:
    hops = tuple(HopResult(h.question, h.answer, _route_name(h.route), h.edit_id or None, tuple(h.related_edit_ids))
                 for h in response.hops)
    timings = _timings_ms(response.timings)
    return MultiHopResult(response.answer, tuple(response.plan), hops, tuple(response.edit_ids),
                          {"queue": timings["queue"], "total": timings["total"]})


def chat_result(result: chat_pb.ChatResult) -> ChatResult:
    return ChatResult(
        reply=result.reply,
        generation=generation_result(result.generation),
        edit=edit_record(result.edit) if result.HasField("edit") else None,
        prompt=result.prompt,
        gate_query=result.gate_query,
    )


def score_result(response: pb.ScoreResponse) -> ScoreResult:
    return ScoreResult(
        route=_route_name(response.route),
        edit_id=response.edit_id or None,
        gate_score=response.gate_score,
        target_ids=tuple(response.target_ids),
        predicted_ids=tuple(response.predicted_ids),
        target_logprobs=tuple(response.target_logprobs),
        timings_ms=_timings_ms(response.timings),
        abstained=response.abstained,
        related_edit_ids=tuple(response.related_edit_ids),
    )


def server_info(r: pb.GetServerInfoResponse) -> ServerInfo:
    return ServerInfo(
        model=r.model, model_type=r.model_type, parameters=r.parameters, encoder=r.encoder, gate=r.gate,
        threshold=r.threshold, top_k=r.top_k, in_scope_route=_route_name(r.in_scope_route),
        routes=tuple(_route_name(x) for x in r.routes), version=r.version,
        model_fingerprint=r.model_fingerprint, degraded=tuple(r.degraded),
    )


def parametric_options_to_pb(options: ParametricOptions) -> parametric_pb.ParametricOptions:
    return parametric_pb.ParametricOptions(
        layer=options.layer, layers=list(options.layers), steps=options.steps, lr=options.lr,
        mom2_weight=options.mom2_weight, norm_constraint=options.norm_constraint,
        null_space_cutoff=options.null_space_cutoff, remove_from_gate=options.remove_from_gate,
        deferral_radius=options.deferral_radius, fire_at=options.fire_at, memory_subjects=options.memory_subjects,
        own_subject_questions=options.own_subject_questions, own_subject_tokens=options.own_subject_tokens,
    )


def parametric_progress(p: parametric_pb.ParametricProgress) -> ParametricProgress:
    return ParametricProgress(p.stage, p.step, p.total, p.loss if p.HasField("loss") else None, p.edit_id or None)


def attribution_result(r: parametric_pb.AttributeResponse) -> AttributionResult:
    return AttributionResult(r.answer_token, r.probability, tuple(
        LayerNeurons(layer.layer, layer.module, tuple(
            NeuronScore(n.neuron, n.attribution, n.activation) for n in layer.neurons
        )) for layer in r.layers
    ))


def baked_record(b: parametric_pb.BakedEdit) -> BakedEditRecord:
    return BakedEditRecord(
        namespace=b.namespace, edit_id=b.edit_id, method=_METHOD_NAMES.get(b.method, "unspecified"),
        application_id=b.application_id, modules=tuple(b.modules), in_gate=b.in_gate,
        created_at_unix_s=b.created_at_unix_s,
    )


def _route_name(value: int) -> str:
    return _ROUTE_NAMES.get(value, "unspecified")


def _timings_ms(timings: pb.Timings) -> dict[str, float]:
    return {name: getattr(timings, f"{name}_ms") for name in _TIMING_FIELDS}
