"""InferenceService over gRPC: convert, authorize, call the answering use cases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import grpc

from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from server.auth.roles import Role
from server.servicers.convert import (
    answer_to_pb,
    chain_query_from_pb,
    chain_to_pb,
    options_from_pb,
    query_from_pb,
    scored_to_pb,
    server_info_to_pb,
)
from server.servicers.rpc import Context, Servicer, caller_gone, stream_text, streaming, unary


class InferenceServicer(Servicer, pb_grpc.InferenceServiceServicer):
    @unary(Role.READ)
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        answer = await self.service.answers.answer(
            query_from_pb(request), options_from_pb(request.options), should_stop=caller_gone(context)
        )
        return answer_to_pb(answer)

    @streaming(Role.READ)
    def GenerateStream(self, request: pb.GenerateRequest, context: Context) -> AsyncIterator[pb.GenerateStreamResponse]:
        answer = partial(self.service.answers.answer, query_from_pb(request), options_from_pb(request.options))
        return stream_text(answer, context, pb.GenerateStreamResponse, answer_to_pb)

    @unary(Role.READ)
    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        scored = await self.service.answers.score(query_from_pb(request), request.target, caller_gone(context))
        return scored_to_pb(scored)

    @unary(Role.READ)
    async def AnswerMultiHop(
        self, request: pb.AnswerMultiHopRequest, context: grpc.aio.ServicerContext
    ) -> pb.AnswerMultiHopResponse:
        followed = await self.service.answers.follow_chain(chain_query_from_pb(request), caller_gone(context))
        return chain_to_pb(followed)

    @unary(Role.READ)
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerInfoResponse:
        return server_info_to_pb(self.service.info)
