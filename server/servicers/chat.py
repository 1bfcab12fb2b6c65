"""ChatService: answer the latest turn of a conversation through the gate; store users' corrections as edits."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from time import perf_counter

import grpc

from editcache.v1 import chat_pb2 as chat_pb
from editcache.v1 import chat_pb2_grpc as chat_pb_grpc
from editcache.v1 import editcache_pb2 as pb
from server.auth import Authorizer, Role
from server.chat.corrections import Exchange, structured_spec
from server.chat.gating import decide_turn
from server.chat.transcript import ReplyFilter, Turn
from server.engine import EngineHolder
from server.errors import InvalidArgument
from server.interfaces import StopCheck, TextSink
from server.servicers.answering import answer_timings, relay
from server.servicers.convert import answer_to_pb, edit_spec_from_pb, edit_to_pb, options_from_pb, route_from_pb
from server.servicers.rpc import caller_gone, streaming, unary
from server.types import Answer, Edit, EditSpec, Query
from server.validation import (
    check_edit_id,
    check_edit_spec,
    check_generation_options,
    check_namespace,
    check_text,
    check_turns,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatAnswer:
    reply: str  # the assistant's turn, as the user sees it
    answer: Answer  # the raw continuation and how it was produced
    prompt: str  # the conversation as the model read it
    gate_query: str


class ChatServicer(chat_pb_grpc.ChatServiceServicer):
    def __init__(self, holder: EngineHolder, auth: Authorizer) -> None:
        self._holder = holder
        self._auth = auth

    @streaming
    async def Chat(
        self, request: chat_pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb.ChatResponse]:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.READ, "Chat")
        answering = relay(lambda on_text, should_stop: self._answer(request, on_text, should_stop), context)
        async with aclosing(answering):
            async for delta, answer in answering:
                if answer is None:
                    yield chat_pb.ChatResponse(text_delta=delta)
                else:
                    yield chat_pb.ChatResponse(final=_chat_result_to_pb(answer))

    @unary
    async def Correct(
        self, request: chat_pb.CorrectRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb.CorrectResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.WRITE, "Correct")
        engine = self._holder.get()
        limits = engine.config.limits
        namespace = check_namespace(request.namespace)
        # The question becomes one of the edit's key texts, so it is held to their limit.
        question = check_text("question", request.question, limits.max_text_chars)
        answer = check_text("answer", request.answer, limits.max_prompt_chars) if request.answer.strip() else ""
        exchange = Exchange(question, answer)
        kind = request.WhichOneof("correction")
        outputs: Sequence[str] = ()
        if kind == "edit":
            spec = structured_spec(exchange, edit_spec_from_pb(request.edit))
        elif kind == "text":
            text = check_text("text", request.text, limits.max_text_chars)
            extraction, _ = await engine.worker.run(
                lambda: engine.corrections.extract(exchange, text), caller_gone(context)
            )
            spec, outputs = extraction.spec, extraction.outputs
        else:
            raise InvalidArgument(
                "correction is missing: set text (free text, e.g. 'No, it is Taipei') or edit "
                "(subject, prompt, target_new)"
            )
        check_edit_spec(spec, "edit", limits)
        if request.dry_run:
            return chat_pb.CorrectResponse(edit=_spec_to_pb(spec, namespace), stored=False, extraction=outputs)
        (edit,) = await engine.in_io(engine.router.scope.add, namespace, [spec])
        log.info("correction stored in namespace %s as edit %s (%s: %r -> %r)", namespace, edit.id, kind,
                 edit.prompt, edit.target_new)
        return chat_pb.CorrectResponse(edit=edit_to_pb(edit), stored=True, extraction=outputs)

    async def _answer(
        self, request: chat_pb.ChatRequest, on_text: TextSink | None, should_stop: StopCheck
    ) -> ChatAnswer:
        started = perf_counter()
        engine = self._holder.get()
        limits = engine.config.limits
        options = options_from_pb(request.options, engine.config.default_max_new_tokens)
        check_generation_options(options, limits)
        namespace = check_namespace(request.namespace)
        turns = [Turn(t.role, t.content) for t in request.turns]
        check_turns(turns, limits)
        route = route_from_pb(request.route)
        edit_id = check_edit_id(request.edit_id) if request.edit_id else None
        prompt = engine.conversation.render(turns)
        turn = await engine.in_io(decide_turn, engine.router, namespace, turns, route, edit_id)
        # Every route continues the rendered conversation; in-scope routes add the edit as they do for Generate.
        query = Query(namespace, prompt.text, route, edit_id)
        reply = ReplyFilter(prompt.turn_ends, on_text)
        # The format's turn ends stop generation (a base model would go on to write the user's next turn).
        options = replace(options, stop=(*options.stop, *prompt.turn_ends))
        before_model = perf_counter()
        generation, queue_ms = await engine.worker.run(
            lambda: engine.router.generate(query, turn.decision, options, reply.feed, should_stop), should_stop
        )
        timings = answer_timings(turn.decision, queue_ms, before_model, started)
        decision = turn.decision
        log.info(
            "chat %s namespace=%s turns=%d route=%s edit=%s score=%.3f tokens=%d total_ms=%.0f",
            uuid.uuid4().hex[:8], namespace, len(turns), decision.route_label,
            decision.edit.id if decision.edit else "-", decision.score, len(generation.token_ids), timings.total_ms,
        )
        return ChatAnswer(reply.reply(generation.text), Answer(generation, decision, timings), prompt.text,
                          turn.gate_query)


def _chat_result_to_pb(chat: ChatAnswer) -> chat_pb.ChatResult:
    edit = chat.answer.decision.edit
    return chat_pb.ChatResult(
        reply=chat.reply, generation=answer_to_pb(chat.answer), edit=edit_to_pb(edit) if edit else None,
        prompt=chat.prompt, gate_query=chat.gate_query,
    )


def _spec_to_pb(spec: EditSpec, namespace: str) -> pb.Edit:
    """An edit not stored (dry run): no id, no creation time."""
    return edit_to_pb(Edit(id="", namespace=namespace, subject=spec.subject, prompt=spec.prompt,
                           target_new=spec.target_new, target_true=spec.target_true, paraphrases=spec.paraphrases,
                           created_at_unix_s=0.0))
