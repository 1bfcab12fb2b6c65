"""GET /metrics on the HTTP port: the Prometheus exposition of server/metrics.py's families (no auth, like the
--metrics-listen port). A route, not a mount: a mount would answer /metrics with a redirect to /metrics/."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


def metrics_router() -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:  # sync: FastAPI runs it on a thread, since the edits' count reads SQLite
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
