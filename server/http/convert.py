"""HTTP bodies to the core's records and records to JSON: the one place that knows the HTTP API's shapes.

Conversion only, as in servicers/convert.py: the use-case layer validates and applies defaults.
"""

from __future__ import annotations

import json
from typing import Any

from server.chat.transcript import Turn
from server.errors import InvalidArgument
from server.http.schemas import ChatCompletionRequest, CorrectionBody, EditBody, Message, Sampling
from server.interfaces import Deletion
from server.service.answers import FollowedChain
from server.service.edits import Correction, CorrectionRequest
from server.types import Answer, Decision, Edit, EditEvent, EditSpec, FinishReason, GenerationOptions

# OpenAI's newer name for the system role; the transcript formats know only system, user and assistant.
ROLE_ALIASES = {"developer": "system"}
FINISH_REASONS = {FinishReason.LENGTH: "length", FinishReason.EOS: "stop", FinishReason.STOP: "stop"}


def options_from(body: Sampling, max_completion_tokens: int | None = None) -> GenerationOptions:
    """`n` other than 1 is refused here: the engine answers one choice per request."""
    if body.n != 1:
        raise InvalidArgument(f"n must be 1 (one choice per request), got {body.n}")
    name, max_tokens = ("max_completion_tokens", max_completion_tokens) if max_completion_tokens is not None else (
        "max_tokens", body.max_tokens)
    if max_tokens is not None and max_tokens < 1:  # 0 would mean "the server's default" to the service
        raise InvalidArgument(f"{name} must be at least 1, got {max_tokens}")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return GenerationOptions(
        max_new_tokens=max_tokens or 0,  # 0: the server's default
        temperature=0.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=stop,
        seed=body.seed,
    )


def chat_options_from(body: ChatCompletionRequest) -> GenerationOptions:
    return options_from(body, body.max_completion_tokens)


def turns_from(messages: list[Message]) -> tuple[Turn, ...]:
    return tuple(Turn(ROLE_ALIASES.get(m.role, m.role), _text_of(m, i)) for i, m in enumerate(messages))


def _text_of(message: Message, index: int) -> str:
    if isinstance(message.content, str) or message.content is None:
        return message.content or ""
    texts = []
    for j, part in enumerate(message.content):
        if part.type != "text" or part.text is None:
            raise InvalidArgument(f"messages[{index}].content[{j}] is a {part.type!r} part; only text parts are read")
        texts.append(part.text)
    return "".join(texts)


def prompt_from(prompt: str | list[str]) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) != 1:
        raise InvalidArgument(f"prompt must be a string or a list of one string, got a list of {len(prompt)}")
    return prompt[0]


def spec_from(body: EditBody) -> EditSpec:
    return EditSpec(body.subject, body.prompt, body.target_new, body.target_true, tuple(body.paraphrases),
                    body.kind, body.pattern, body.replacement, tuple(body.aliases))


def correction_request_from(body: CorrectionBody, namespace: str) -> CorrectionRequest:
    if body.text is not None and body.edit is not None:  # gRPC's oneof makes this impossible there
        raise InvalidArgument("give the correction as text or as edit, not both")
    return CorrectionRequest(
        namespace=namespace, question=body.question, answer=body.answer, text=body.text,
        spec=None if body.edit is None else spec_from(body.edit), dry_run=body.dry_run,
    )


def edit_json(edit: Edit) -> dict[str, Any]:
    """gRPC's Edit, with `kind` by its lower-case name, null for no `supersedes`/`superseded_by`, and the times
    (Unix seconds) as `created_at` (version 1) and `updated_at` (this version)."""
    return {
        "id": edit.id, "object": "edit", "namespace": edit.namespace, "kind": edit.kind.value,
        "subject": edit.subject, "prompt": edit.prompt, "target_new": edit.target_new,
        "target_true": edit.target_true, "paraphrases": list(edit.paraphrases), "aliases": list(edit.aliases),
        "pattern": edit.pattern,
        "replacement": edit.replacement, "version": edit.version, "supersedes": edit.supersedes or None,
        "superseded_by": edit.superseded_by or None, "created_at": edit.created_at_unix_s,
        "updated_at": edit.updated_at_unix_s,
    }


def deletion_json(deletion: Deletion) -> dict[str, Any]:
    """The edit as it was, and the edit it had superseded, live again (null for none)."""
    restored = None if deletion.restored is None else edit_json(deletion.restored)
    return {**edit_json(deletion.edit), "deleted": True, "restored": restored}


def history_json(edit: Edit, earlier: list[Edit]) -> dict[str, Any]:
    """GetEdit with history: the edit, and its earlier versions then the edits it superseded, newest first."""
    return {**edit_json(edit), "history": [edit_json(e) for e in earlier]}


def event_json(event: EditEvent) -> dict[str, Any]:
    """An audit-log entry; `before` and `after` are the JSON objects the log recorded (null for none), not strings
    as gRPC's before_json and after_json."""
    return {
        "object": "edit.event", "seq": event.seq, "at": event.at_unix_s, "namespace": event.namespace,
        "token_name": event.token_name, "action": event.action.value, "edit_id": event.edit_id,
        "before": json.loads(event.before_json) if event.before_json else None,
        "after": json.loads(event.after_json) if event.after_json else None,
    }


def correction_json(correction: Correction) -> dict[str, Any]:
    edit = edit_json(correction.edit)
    if not correction.stored:
        edit["id"] = None  # a dry run stores nothing, so there is no id yet
    return {"object": "correction", "stored": correction.stored, "edit": edit,
            "extraction": list(correction.extraction)}


def chain_json(followed: FollowedChain) -> dict[str, Any]:
    """AnswerMultiHopResponse's fields, as the gRPC API names them."""
    chain = followed.chain
    hops = [{"question": h.question, "answer": h.answer, "route": h.route.value,
             "edit_id": h.edit.id if h.edit else None, "related_edit_ids": [e.id for e in h.related]}
            for h in chain.hops]
    return {"answer": chain.answer, "plan": list(chain.plan), "hops": hops, "edit_ids": list(chain.edits_used),
            "timings_ms": {"queue": followed.timings.queue_ms, "total": followed.timings.total_ms}}


def extension(decision: Decision, answer: Answer | None = None, gate_query: str | None = None) -> dict[str, Any]:
    """The `editcache` object on every answer: which route answered, from which edit, with what gate score."""
    edit = decision.edit
    body: dict[str, Any] = {
        "route": decision.route.value,
        "edit_id": edit.id if edit else None,
        "gate_score": decision.score,
        "abstained": decision.abstained,
        "related_edit_ids": [e.id for e in decision.related],
        "edit": None if edit is None else {"subject": edit.subject, "prompt": edit.prompt,
                                           "target_new": edit.target_new},
    }
    if gate_query is not None:
        body["gate_query"] = gate_query
    if answer is not None:
        t = answer.timings
        body["timings_ms"] = {"embed": t.embed_ms, "search": t.search_ms, "gate": t.gate_ms, "queue": t.queue_ms,
                              "generate": t.generate_ms, "total": t.total_ms}
    return body


def usage(answer: Answer) -> dict[str, int]:
    generation = answer.generation
    completion = len(generation.token_ids)
    return {"prompt_tokens": generation.prompt_tokens, "completion_tokens": completion,
            "total_tokens": generation.prompt_tokens + completion}
