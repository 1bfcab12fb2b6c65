"""editcache-serve's parts that need no Ray: the RPC methods the proxy calls, the context adapter, data directory
slots and the settings checks (tests/integration/test_ray_serve.py runs the whole on a local Ray cluster)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from server.config import Config
from server.serve_ray.cli import Scaling, replica_config
from server.serve_ray.context import Aborted, ProxiedContext
from server.serve_ray.deployment import SERVICES, DataDirSlot, EditcacheReplica, servicer_functions
from server.servicers.rpc import caller_gone


class FakeRayContext:
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = metadata
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailing_metadata: list[tuple[str, str]]) -> None:
        pass


def test_every_rpc_of_the_api_is_a_method_the_proxy_can_call() -> None:
    for descriptor, _ in SERVICES:
        for method in descriptor.methods:
            forward = getattr(EditcacheReplica, method.name)
            # Ray passes the call's context only to a parameter of this name.
            assert "grpc_context" in inspect.signature(forward).parameters
            if method.server_streaming:
                assert inspect.isasyncgenfunction(forward), method.full_name
            else:
                assert inspect.iscoroutinefunction(forward), method.full_name


def test_servicer_functions_are_importable() -> None:
    paths = servicer_functions()
    assert "editcache.v1.editcache_pb2_grpc.add_EditServiceServicer_to_server" in paths
    assert "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server" in paths
    for path in paths:
        module, name = path.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name))


def test_the_context_carries_metadata_in_and_the_status_out() -> None:
    ray_context = FakeRayContext([("authorization", "Bearer t")])
    context = ProxiedContext(ray_context)
    assert context.invocation_metadata() == (("authorization", "Bearer t"),)
    with pytest.raises(Aborted):
        asyncio.run(context.abort(grpc.StatusCode.NOT_FOUND, "no edit with id 'x'"))
    assert (ray_context.code, ray_context.details) == (grpc.StatusCode.NOT_FOUND, "no edit with id 'x'")


def test_a_generation_sees_the_caller_gone_once_the_call_ends() -> None:
    context = ProxiedContext(FakeRayContext([]))
    gone = caller_gone(context)  # type: ignore[arg-type]  # the servicers' helper, on the adapter
    assert not gone()
    context.end()
    assert gone()


def test_live_replicas_never_share_a_data_directory_and_a_dead_ones_is_reused(tmp_path: Path) -> None:
    first, second = DataDirSlot.claim(tmp_path), DataDirSlot.claim(tmp_path)
    assert (first.path.name, second.path.name) == ("replica-0", "replica-1")
    first._lock.close()  # what the kernel does when its process dies
    assert DataDirSlot.claim(tmp_path).path.name == "replica-0"


def test_scaling_options() -> None:
    assert Scaling(replicas=3).deployment_options(5.0)["num_replicas"] == 3
    options = Scaling(min_replicas=1, max_replicas=4, target_ongoing_requests=3).deployment_options(5.0)
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3}
    assert "num_replicas" not in options
    with pytest.raises(ValueError, match="go together"):
        Scaling(min_replicas=1)
    with pytest.raises(ValueError, match="min-replicas <= --max-replicas"):
        Scaling(min_replicas=5, max_replicas=2)


def test_replica_settings_refuse_what_the_proxy_cannot_serve(tmp_path: Path) -> None:
    shared = Config(store="postgresql://editcache@db/edits")
    assert replica_config(shared, Scaling(cpus_per_replica=2)).torch_threads == 2  # not every core of the machine
    with pytest.raises(ValueError, match="a store they share"):
        replica_config(Config(), Scaling())
    cert = tmp_path / "c.pem"
    with pytest.raises(ValueError, match="plaintext only"):
        replica_config(replace(shared, tls_cert=cert, tls_key=cert), Scaling())
    with pytest.raises(ValueError, match="gRPC only"):
        replica_config(replace(shared, http_listen="127.0.0.1:8000"), Scaling())


def test_it_refuses_to_serve_every_interface_without_tokens(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.serve_ray.cli import main

    for name in ("TQDM_DISABLE", "RAY_USAGE_STATS_ENABLED"):  # main sets them if unset: not for the other tests
        monkeypatch.setenv(name, os.environ.get(name, "0"))
    assert main(["--store", "postgresql://editcache@db/edits"]) == 2  # before anything starts Ray
    assert "without tokens" in capsys.readouterr().err
