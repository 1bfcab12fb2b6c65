"""/metrics on the HTTP front end: a plain 200 with the exposition (no redirect, no token), while the model loads."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server import metrics  # noqa: F401  # defines the families
from server.auth.authorizer import Authorizer
from server.http.app import create_app
from server.http.metrics import metrics_router
from server.service import ServiceHolder


def test_metrics_route_serves_the_exposition() -> None:
    client = TestClient(create_app(ServiceHolder(), Authorizer.from_file(None), routers=[metrics_router()]))
    response = client.get("/metrics", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for family in ("grpc_server_handled_total", "editcache_gate_seconds", "editcache_queue_depth"):
        assert f"# TYPE {family.removesuffix('_total')}" in response.text
