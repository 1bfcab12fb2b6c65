"""Streamed answers: iterate for text deltas; the final message becomes `.result`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from client import convert
from client.errors import Internal, map_rpc_errors
from client.records import ChatResult, GenerationResult

R = TypeVar("R")


class ResultStream(Generic[R]):
    """Text deltas of a streamed answer; `.result` is set once iteration ends.

    Iterate it once. Leaving the loop early (or leaving a `with` block)
    cancels the RPC; `.result` then stays None.
    """

    def __init__(self, call: Any, to_result: Callable[[Any], R]) -> None:
        self._call = call  # the grpc response iterator, also a grpc.Call
        self._to_result = to_result  # the final message's result field -> R
        self._started = False
        self.result: R | None = None

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError(f"a {type(self).__name__} can be iterated only once")
        self._started = True
        try:
            with map_rpc_errors():
                for message in self._call:
                    if message.text_delta:
                        yield message.text_delta
                    if message.HasField("final"):
                        self.result = self._to_result(message.final)
        finally:
            if self.result is None:
                self._call.cancel()
        if self.result is None:
            raise Internal("the server closed the stream without a final response")

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.result is None:
            self._call.cancel()


class GenerationStream(ResultStream[GenerationResult]):
    """The text of a streamed `generate`; `.result` is its GenerationResult."""

    def __init__(self, call: Any) -> None:
        super().__init__(call, convert.generation_result)


class ChatStream(ResultStream[ChatResult]):
    """The reply of a streamed `chat`; `.result` is its ChatResult."""

    def __init__(self, call: Any) -> None:
        super().__init__(call, convert.chat_result)
