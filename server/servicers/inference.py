"""InferenceService: one answering path; the streaming RPC forwards its text as it comes."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from time import monotonic, perf_counter

import grpc

from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from server.auth import Authorizer, Role
from server.engine import Engine, EngineHolder
from server.interfaces import StopCheck, TextSink
from server.servicers.convert import (
    answer_to_pb,
    options_from_pb,
    route_from_pb,
    scores_to_pb,
    server_info_to_pb,
)
from server.servicers.rpc import streaming, unary
from server.types import Answer, Decision, Query, Timings
from server.validation import check_edit_id, check_generation_options, check_namespace, check_text

log = logging.getLogger(__name__)


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    def __init__(self, holder: EngineHolder, auth: Authorizer) -> None:
        self._holder = holder
        self._auth = auth

    @unary
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.READ, "Generate")
        return answer_to_pb(await self._answer(request, None, _caller_gone(context)))

    @streaming
    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.READ, "GenerateStream")
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str] = asyncio.Queue()
        cancelled = threading.Event()  # set when the client goes away: the model thread stops generating
        gone = _caller_gone(context)

        def on_text(delta: str) -> None:  # called on the model thread
            loop.call_soon_threadsafe(deltas.put_nowait, delta)

        answering = asyncio.ensure_future(self._answer(request, on_text, lambda: cancelled.is_set() or gone()))
        try:
            while True:
                next_delta = asyncio.ensure_future(deltas.get())
                await asyncio.wait({next_delta, answering}, return_when=asyncio.FIRST_COMPLETED)
                if not next_delta.done():
                    next_delta.cancel()
                    break
                yield pb.GenerateStreamResponse(text_delta=next_delta.result())
            while not deltas.empty():  # text queued before the answer finished
                yield pb.GenerateStreamResponse(text_delta=deltas.get_nowait())
            yield pb.GenerateStreamResponse(final=answer_to_pb(await answering))
        finally:
            cancelled.set()
            if not answering.done():
                answering.cancel()

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
            lambda: engine.router.score(query, decision, target), _caller_gone(context)
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
            uuid.uuid4().hex[:8], query.namespace, decision.route.value, decision.edit.id if decision.edit else "-",
            decision.score, len(generation.token_ids), timings.total_ms,
        )
        return Answer(generation, decision, timings)


def _caller_gone(context: grpc.aio.ServicerContext) -> StopCheck:
    """True once the call is over (cancelled, failed) or past its deadline; safe to call from any thread."""
    done = threading.Event()
    context.add_done_callback(lambda _: done.set())
    remaining_s = context.time_remaining()
    deadline = None if remaining_s is None else monotonic() + remaining_s
    return lambda: done.is_set() or (deadline is not None and monotonic() >= deadline)


def _query(request: pb.GenerateRequest | pb.ScoreRequest, engine: Engine) -> Query:
    return Query(
        namespace=check_namespace(request.namespace),
        text=check_text("prompt", request.prompt, engine.config.limits.max_prompt_chars),
        route=route_from_pb(request.route),
        edit_id=check_edit_id(request.edit_id) if request.edit_id else None,
    )


def _timings(decision: Decision, queue_ms: float, before_model: float, started: float) -> Timings:
    now = perf_counter()
    return replace(
        decision.timings, queue_ms=queue_ms, generate_ms=(now - before_model) * 1e3 - queue_ms,
        total_ms=(now - started) * 1e3,
    )
