"""The loaded parts the servicers work with, and the holder that says when they are ready."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from server.chat.corrections import CorrectionExtractor
from server.chat.transcript import ConversationFormat
from server.config import Config
from server.errors import Unavailable
from server.interfaces import Memory
from server.parametric.editor import ParametricEditor
from server.router import Router
from server.types import Route
from server.worker import ModelWorker


@dataclass(frozen=True)
class ServerInfo:
    model: str
    model_type: str
    parameters: int
    encoder: str
    gate: str
    threshold: float
    top_k: int
    in_scope_route: Route
    routes: tuple[Route, ...]
    version: str
    model_fingerprint: str
    degraded: tuple[str, ...] = ()  # a sentence per default part not in force: what answers instead, and why


@dataclass(frozen=True)
class Engine:
    info: ServerInfo
    config: Config
    memory: Memory
    router: Router
    worker: ModelWorker  # the only thread that runs the language model
    # Embedding and SQLite work, kept off the event loop and off the model thread.
    io: ThreadPoolExecutor
    parametric: ParametricEditor  # the only writer of the model's weights
    conversation: ConversationFormat  # how Chat renders turns for this model
    corrections: CorrectionExtractor  # reads free-text corrections (Correct) with the base model

    async def in_io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)


class EngineHolder:
    """Empty while the model loads; servicers answer UNAVAILABLE until it is set."""

    def __init__(self) -> None:
        self._engine: Engine | None = None

    def set(self, engine: Engine) -> None:
        self._engine = engine

    def get(self) -> Engine:
        if self._engine is None:
            raise Unavailable("the model is still loading; retry when the health service reports SERVING")
        return self._engine
