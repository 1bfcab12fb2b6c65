"""ChatService over gRPC: convert, authorize, call the chat and correction use cases."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
from server.servicers.rpc import Servicer, caller_gone, stream_text, streaming, unary


class ChatServicer(Servicer, chat_pb_grpc.ChatServiceServicer):
    @streaming(Role.READ)
    async def Chat(
        self, request: chat_pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb.ChatResponse]:
        answers = self.service.answers
        chat, options = chat_query_from_pb(request), options_from_pb(request.options)
        async for message in stream_text(
            lambda on_text, should_stop: answers.chat(chat, options, on_text, should_stop), context,
            lambda delta: chat_pb.ChatResponse(text_delta=delta),
            lambda answer: chat_pb.ChatResponse(final=chat_answer_to_pb(answer)),
        ):
            yield message

    @unary(Role.WRITE)
    async def Correct(
        self, request: chat_pb.CorrectRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb.CorrectResponse:
        correction = await self.service.edits.correct(correction_request_from_pb(request), caller_gone(context))
        return correction_to_pb(correction)
