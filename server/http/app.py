"""The HTTP app: the OpenAI-compatible API, edits and corrections, multi-hop answers, and the chat page at `/`.

`create_app` is where other HTTP surfaces join (Prometheus' /metrics among them): pass ASGI apps in `mounts`
or FastAPI routers in `routers`; they are served before the page, which takes every path left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from server.auth.authorizer import Authorizer
from server.http import errors
from server.http.edits_api import edits_router
from server.http.multihop_api import multihop_router
from server.http.openai_api import openai_router
from server.service import ServiceHolder

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    holder: ServiceHolder, auth: Authorizer, *, mounts: Mapping[str, ASGIApp] | None = None,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The app over `holder` (503 until the service is loaded) with `auth`'s tokens and roles.

    `mounts` maps a path prefix to an ASGI app (e.g. {"/metrics": prometheus_client.make_asgi_app()}).
    """
    app = FastAPI(title="editcache", version=version("editcache"), redoc_url=None,
                  description="OpenAI-compatible chat and completions through editcache's gate, edits and corrections")
    errors.install(app)
    app.include_router(openai_router(holder, auth))
    app.include_router(edits_router(holder, auth))
    app.include_router(multihop_router(holder, auth))
    for router in routers:
        app.include_router(router)
    for path, asgi in (mounts or {}).items():
        app.mount(path, asgi)
    # Last: a mount at "/" takes every path no route above matched.
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="page")
    return app
