"""uvicorn inside the server's own event loop, beside grpc.aio, on a socket bound before the model loads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """Leaves SIGINT/SIGTERM to the server's loop, which drains gRPC and then stops this through `stop`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """A running uvicorn; `port` is the one bound (a listen address with port 0 picks a free one)."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], port: int) -> None:
        self._server = server
        self._task = task
        self.port = port

    async def stop(self) -> None:
        """Stops accepting, lets requests in flight finish (up to the graceful timeout), then returns."""
        self._server.should_exit = True
        await self._task


async def start_http(
    app: ASGIApp, listen: str, grace_s: float, tls_cert: Path | None = None, tls_key: Path | None = None
) -> HttpServer:
    """Binds `listen` (HOST:PORT, [v6]:PORT) now, so the port is known and held while the model loads; with a
    certificate and key it speaks HTTPS only, as gRPC speaks TLS only with them."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, int(port)), family=family)  # SO_REUSEADDR, as uvicorn binds
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=max(1, round(grace_s)),
        # Streams are server-sent events; the default h11/httptools pick and websockets are not needed.
        ws="none", ssl_certfile=tls_cert, ssl_keyfile=tls_key,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    return HttpServer(server, task, sock.getsockname()[1])
