"""InferenceService: one answering path; the streaming RPC forwards its text as it comes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from time import perf_counter

import grpc

from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from server.auth import Authorizer, Role
from server.engine import Engine, EngineHolder
from server.interfaces import StopCheck, TextSink
from server.servicers.answering import answer_timings as _timings
from server.servicers.answering import relay
from server.servicers.convert import (
    answer_to_pb,
    options_from_pb,
    route_from_pb,
    scores_to_pb,
    server_info_to_pb,
)
from server.servicers.rpc import caller_gone, streaming, unary
from server.types import Answer, Query
from server.validation import check_edit_id, check_generation_options, check_namespace, check_text

log = logging.getLogger(__name__)


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    def __init__(self, holder: EngineHolder, auth: Authorizer) -> None:
        self._holder = holder
        self._auth = auth

    @unary
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.READ, "Generate")
        return answer_to_pb(await self._answer(request, None, caller_gone(context)))

    @streaming
    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.READ, "GenerateStream")
        answering = relay(lambda on_text, should_stop: self._answer(request, on_text, should_stop), context)
        async with aclosing(answering):
            async for delta, answer in answering:
                if answer is None:
                    yield pb.GenerateStreamResponse(text_delta=delta)
                else:
                    yield pb.GenerateStreamResponse(final=answer_to_pb(answer))

    @unary
    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.READ, "Score")
        started = perf_counter()
        engine = self._holder.get()
        query = _query(request, engine)
        target = check_text("target", request.target, engine.config.limits.max_text_chars)
        decision = await engine.in_io(engine.router.decide, query)
        before_model = perf_counter()
        scores, queue_ms = await engine.worker.run(
            lambda: engine.router.score(query, decision, target), caller_gone(context)
        )
        return scores_to_pb(scores, decision, _timings(decision, queue_ms, before_model, started))

    @unary
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerInfoResponse:
        self._auth.check(context.invocation_metadata() or (), None, Role.READ, "GetServerInfo")
        return server_info_to_pb(self._holder.get().info)

    async def _answer(self, request: pb.GenerateRequest, on_text: TextSink | None, should_stop: StopCheck) -> Answer:
        started = perf_counter()
        engine = self._holder.get()
        options = options_from_pb(request.options, engine.config.default_max_new_tokens)
        check_generation_options(options, engine.config.limits)
        query = _query(request, engine)
        decision = await engine.in_io(engine.router.decide, query)
        before_model = perf_counter()
        generation, queue_ms = await engine.worker.run(
            lambda: engine.router.generate(query, decision, options, on_text, should_stop), should_stop
        )
        timings = _timings(decision, queue_ms, before_model, started)
        log.info(
            "request %s namespace=%s route=%s edit=%s score=%.3f tokens=%d total_ms=%.0f",
            uuid.uuid4().hex[:8], query.namespace, decision.route_label, decision.edit.id if decision.edit else "-",
            decision.score, len(generation.token_ids), timings.total_ms,
        )
        return Answer(generation, decision, timings)


def _query(request: pb.GenerateRequest | pb.ScoreRequest, engine: Engine) -> Query:
    return Query(
        namespace=check_namespace(request.namespace),
        text=check_text("prompt", request.prompt, engine.config.limits.max_prompt_chars),
        route=route_from_pb(request.route),
        edit_id=check_edit_id(request.edit_id) if request.edit_id else None,
    )
