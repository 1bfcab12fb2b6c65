"""OpenAI's answering endpoints over the answering use cases: /v1/models, /v1/chat/completions, /v1/completions.

Handlers convert, authorize (the role of the RPC each mirrors) and call the service; streamed answers are
server-sent events of OpenAI's chunk objects, ended by `data: [DONE]`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from time import time
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from server.auth.authorizer import Authorizer
from server.auth.roles import Role
from server.http.auth import authorize, namespace_of
from server.http.convert import (
    FINISH_REASONS,
    chat_options_from,
    extension,
    options_from,
    prompt_from,
    turns_from,
    usage,
)
from server.http.errors import error_body, error_response
from server.http.schemas import ChatCompletionRequest, CompletionRequest, Sampling
from server.interfaces import StopCheck, TextSink
from server.service import ServiceHolder
from server.service.answers import ChatAnswer, ChatQuery, never
from server.service.concurrency import relay
from server.types import Answer, Query

T = TypeVar("T")


@dataclass(frozen=True)
class Envelope:
    """What every object of one response repeats."""

    id: str
    object: str
    created: int
    model: str

    def wrap(self, **fields: Any) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model, **fields}


def openai_router(holder: ServiceHolder, auth: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(auth, request, Role.READ, "GetServerInfo", None)
        info = holder.get().info
        model = {"id": info.model, "object": "model", "created": 0, "owned_by": "editcache",
                 "editcache": {"model_type": info.model_type, "gate": info.gate, "threshold": info.threshold,
                               "in_scope_route": info.in_scope_route.value,
                               "routes": [r.value for r in info.routes], "degraded": list(info.degraded)}}
        return {"object": "list", "data": [model]}

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        namespace = namespace_of(request)
        authorize(auth, request, Role.READ, "Chat", namespace)
        service = holder.get()
        chat = partial(service.answers.chat, ChatQuery(namespace, turns_from(body.messages)), chat_options_from(body))
        if body.stream:
            envelope = Envelope(f"chatcmpl-{uuid.uuid4().hex}", "chat.completion.chunk", int(time()),
                                service.info.model)
            return await _stream(chat, _ChatChunks(envelope, _include_usage(body)))
        result = await chat(None, never)
        envelope = Envelope(f"chatcmpl-{uuid.uuid4().hex}", "chat.completion", int(time()), service.info.model)
        choice = {"index": 0, "message": {"role": "assistant", "content": result.reply}, "logprobs": None,
                  "finish_reason": FINISH_REASONS[result.answer.generation.finish_reason]}
        return JSONResponse(envelope.wrap(
            choices=[choice], usage=usage(result.answer),
            editcache=extension(result.answer.decision, result.answer, result.gate_query),
        ))

    @router.post("/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        namespace = namespace_of(request)
        authorize(auth, request, Role.READ, "Generate", namespace)
        service = holder.get()
        answer = partial(service.answers.answer, Query(namespace, prompt_from(body.prompt)), options_from(body))
        envelope = Envelope(f"cmpl-{uuid.uuid4().hex}", "text_completion", int(time()), service.info.model)
        if body.stream:
            return await _stream(answer, _TextChunks(envelope, _include_usage(body)))
        result = await answer(None, never)
        choice = {"index": 0, "text": result.generation.text, "logprobs": None,
                  "finish_reason": FINISH_REASONS[result.generation.finish_reason]}
        return JSONResponse(envelope.wrap(choices=[choice], usage=usage(result),
                                          editcache=extension(result.decision, result)))

    return router


def _include_usage(body: Sampling) -> bool:
    return body.stream_options is not None and body.stream_options.include_usage


class _ChatChunks:
    """chat.completion.chunk objects: the role first, then content deltas, then the finish (with the editcache
    extension), then the usage chunk when asked for."""

    def __init__(self, envelope: Envelope, include_usage: bool) -> None:
        self._envelope = envelope
        self._usage: dict[str, Any] = {"usage": None} if include_usage else {}  # OpenAI: null until the last

    def start(self) -> Iterable[dict[str, Any]]:
        yield self._chunk({"role": "assistant", "content": ""}, None)

    def delta(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text}, None)

    def end(self, result: ChatAnswer) -> Iterable[dict[str, Any]]:
        answer = result.answer
        finish = self._chunk({}, FINISH_REASONS[answer.generation.finish_reason])
        yield {**finish, "editcache": extension(answer.decision, answer, result.gate_query)}
        if self._usage:
            yield self._envelope.wrap(choices=[], usage=usage(answer))

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope.wrap(choices=[choice], **self._usage)


class _TextChunks:
    """text_completion objects for a streamed /v1/completions, shaped as _ChatChunks."""

    def __init__(self, envelope: Envelope, include_usage: bool) -> None:
        self._envelope = envelope
        self._usage: dict[str, Any] = {"usage": None} if include_usage else {}

    def start(self) -> Iterable[dict[str, Any]]:
        return ()

    def delta(self, text: str) -> dict[str, Any]:
        return self._chunk(text, None)

    def end(self, result: Answer) -> Iterable[dict[str, Any]]:
        finish = self._chunk("", FINISH_REASONS[result.generation.finish_reason])
        yield {**finish, "editcache": extension(result.decision, result)}
        if self._usage:
            yield self._envelope.wrap(choices=[], usage=usage(result))

    def _chunk(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope.wrap(choices=[choice], **self._usage)


async def _stream(answer: Callable[[TextSink, StopCheck], Awaitable[T]], chunks: Any) -> Response:
    """Server-sent events of `chunks` while `answer` runs. The first piece of text is awaited before the headers
    go out, so a request the service refuses (a bad field, a full queue) gets its HTTP status, not a 200 stream
    that fails; an error later ends the stream with an error object, as OpenAI's servers do."""
    gone = threading.Event()  # set when the caller disconnects: the model thread stops at the next token
    answering = relay(answer, gone.is_set)
    try:
        first = await anext(answering)
    except Exception as exc:
        await answering.aclose()
        return error_response(exc)

    async def events() -> AsyncGenerator[str, None]:
        try:
            for chunk in chunks.start():
                yield _event(chunk)
            delta, result = first
            while result is None:
                if delta:
                    yield _event(chunks.delta(delta))
                delta, result = await anext(answering)
            for chunk in chunks.end(result):
                yield _event(chunk)
            yield "data: [DONE]\n\n"
        except Exception as exc:
            body = json.loads(bytes(error_response(exc).body))
            yield _event(body if "error" in body else error_body(str(exc), "server_error", "internal"))
        finally:
            gone.set()
            await answering.aclose()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
