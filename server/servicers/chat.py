"""ChatService over gRPC: convert, authorize, call the chat and correction use cases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import grpc

from editcache.v1 import chat_pb2 as chat_pb
from editcache.v1 import chat_pb2_grpc as chat_pb_grpc
from server.auth.roles import Role
from server.servicers.convert import (
    chat_answer_to_pb,
    chat_query_from_pb,
    correction_request_from_pb,
    correction_to_pb,
    options_from_pb,
)
from server.servicers.rpc import Context, Servicer, caller_gone, stream_text, streaming, token_name, unary


class ChatServicer(Servicer, chat_pb_grpc.ChatServiceServicer):
    @streaming(Role.READ)
    def Chat(self, request: chat_pb.ChatRequest, context: Context) -> AsyncIterator[chat_pb.ChatResponse]:
        chat = partial(self.service.answers.chat, chat_query_from_pb(request), options_from_pb(request.options))
        return stream_text(chat, context, chat_pb.ChatResponse, chat_answer_to_pb)

    @unary(Role.WRITE)
    async def Correct(
        self, request: chat_pb.CorrectRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb.CorrectResponse:
        correction = await self.service.edits.correct(
            correction_request_from_pb(request), caller_gone(context), token_name(self, context)
        )
        return correction_to_pb(correction)
