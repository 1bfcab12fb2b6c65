"""The use-case layer: the one door every front end (gRPC servicers, HTTP handlers) calls through.

It takes and returns the core's own records, validates caller input, and decides which thread does what;
front ends only convert, authorize and call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from server.errors import Unavailable
from server.service.answers import Answers
from server.service.edits import Edits
from server.service.parametric import Parametric
from server.types import Route


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
class Service:
    info: ServerInfo
    answers: Answers  # Generate, Score, Chat
    edits: Edits  # the edit memory, corrections included
    parametric: Parametric  # edits written into the weights
    close: Callable[[], None]  # after the front ends stop: waits for the model thread, closes the stores


class ServiceHolder:
    """Empty while the model loads; front ends answer UNAVAILABLE until it is set."""

    def __init__(self) -> None:
        self._service: Service | None = None

    def set(self, service: Service) -> None:
        self._service = service

    def get(self) -> Service:
        if self._service is None:
            raise Unavailable("the model is still loading; retry when the health service reports SERVING")
        return self._service
