"""editcache-serve: flags -> Config -> N replicas of the service behind Ray Serve's gRPC proxy."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when needed: --help and bad flags answer before the heavy imports
    from server.config import Config

log = logging.getLogger(__name__)

APP_NAME = "editcache"


@dataclass(frozen=True)
class Scaling:
    """How many replicas: a fixed number, or Ray Serve's autoscaling between min and max."""

    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    max_ongoing_requests: int = 16
    cpus_per_replica: float = 1.0

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.max_ongoing_requests < 1 or self.cpus_per_replica <= 0:
            raise ValueError("--replicas and --max-ongoing-requests must be at least 1, --cpus-per-replica above 0")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("--min-replicas and --max-replicas go together (autoscaling); or give --replicas")
        if self.min_replicas is not None and not 0 <= self.min_replicas <= (self.max_replicas or 0):
            raise ValueError(f"need 0 <= --min-replicas <= --max-replicas, got {self.min_replicas} and "
                             f"{self.max_replicas}")
        if self.max_replicas is not None and self.max_replicas < 1:
            raise ValueError("--max-replicas must be at least 1")
        if self.target_ongoing_requests <= 0:
            raise ValueError("--target-ongoing-requests must be above 0")

    def deployment_options(self, grace_s: float) -> dict[str, Any]:
        """Keyword arguments of serve.deployment."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.cpus_per_replica},
            "max_ongoing_requests": self.max_ongoing_requests,
            "graceful_shutdown_timeout_s": grace_s,
        }
        if self.min_replicas is None:
            options["num_replicas"] = self.replicas
        else:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        return options


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="editcache-serve",
        description="Serve N replicas of editcache-server's gRPC API behind Ray Serve's gRPC proxy, over one shared "
        "PostgreSQL edit store. Other settings as editcache-server: --config FILE (TOML) and EDITCACHE_* variables.",
    )
    parser.add_argument("--replicas", type=int, default=1, help="replicas to run (default 1)")
    parser.add_argument("--min-replicas", type=int, help="autoscaling: fewest replicas (with --max-replicas)")
    parser.add_argument("--max-replicas", type=int, help="autoscaling: most replicas (with --min-replicas)")
    parser.add_argument("--target-ongoing-requests", type=float, default=2.0,
                        help="autoscaling: requests in flight per replica Ray Serve scales towards (default 2)")
    parser.add_argument("--max-ongoing-requests", type=int, default=16,
                        help="requests one replica takes at once; more wait in the proxy (default 16)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0,
                        help="Ray CPUs reserved per replica, and torch threads unless torch_threads is set (default 1)")
    parser.add_argument("--port", type=int, default=50051,
                        help="the gRPC proxy's port, on every interface (Ray binds [::]); 0 picks a free one")
    parser.add_argument("--port-file", type=Path, help="once serving, write the port here (for --port 0)")
    parser.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    parser.add_argument("--request-timeout-s", type=float, help="the proxy's end-to-end bound on a call (default none)")
    parser.add_argument("--config", type=Path, help="TOML file of settings (keys as in server/config.py)")
    parser.add_argument("--store", help="postgresql://USER@HOST:PORT/DB: the edit store every replica shares")
    parser.add_argument("--model", help="gemma-3-270m (default), smollm2-135m-instruct, a model folder or a .gguf file")
    parser.add_argument("--data-dir", type=Path,
                        help="each replica keeps its index files in DATA_DIR/replica-I (default ./data)")
    parser.add_argument("--cache-dir", type=Path, help="converted-model cache (default ~/.cache/editcache)")
    parser.add_argument("--tokens-file", type=Path, help="bearer tokens, as for editcache-server; without one, auth "
                        "is off, which needs --insecure since the proxy listens on every interface")
    parser.add_argument("--insecure", action="store_true", default=None, help="serve without --tokens-file")
    parser.add_argument("--log-level", help="DEBUG, INFO (default), WARNING or ERROR")
    return parser.parse_args(argv)


def replica_config(config: Config, scaling: Scaling) -> Config:
    """The Config each replica builds its service from; ValueError for what the proxy cannot serve.

    TLS: Ray Serve's gRPC proxy binds plaintext only (terminate TLS in front of it). HTTP and a metrics port are
    editcache-server's: N replicas on one machine cannot all bind one port. A replica's torch threads default to
    its CPUs, so replicas sharing a machine do not each take every core.
    """
    if config.store is None:
        raise ValueError("the replicas need a store they share: --store postgresql://USER@HOST/DB (with SQLite "
                         "each replica would keep its own edits)")
    if config.tls_cert is not None:
        raise ValueError("Ray Serve's gRPC proxy serves plaintext only: unset tls_cert/tls_key and terminate TLS "
                         "in front of the proxy")
    if config.http_listen is not None or config.metrics_listen is not None:
        raise ValueError("editcache-serve serves gRPC only: unset http_listen and metrics_listen")
    if config.torch_threads == 0:
        config = dataclasses.replace(config, torch_threads=max(1, math.floor(scaling.cpus_per_replica)))
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or os.environ.get("EDITCACHE_LOG_LEVEL") or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # As editcache-server: no progress bars in a server's log. Set before anything imports tqdm; Ray's local
    # workers inherit this environment.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise report usage to its makers
    from server.auth.authorizer import Authorizer
    from server.cli import port_file_writer
    from server.config import build_config

    overrides = {k: getattr(args, k) for k in ("store", "model", "data_dir", "cache_dir", "tokens_file", "insecure",
                                               "log_level")}
    try:
        scaling = Scaling(args.replicas, args.min_replicas, args.max_replicas, args.target_ongoing_requests,
                          args.max_ongoing_requests, args.cpus_per_replica)
        config = replica_config(build_config(args.config, os.environ, overrides), scaling)
        auth = Authorizer.from_file(config.tokens_file)
    except (ValueError, OSError) as exc:
        print(f"editcache-serve: {exc}", file=sys.stderr)
        return 2
    if not (auth.enabled or config.insecure):
        print("editcache-serve: refusing to serve without tokens: Ray Serve's gRPC proxy listens on every interface, "
              "so anyone who can reach this machine could read and change every namespace. Set tokens_file "
              "(create entries with `python -m server.auth add`), or pass --insecure if the network is trusted",
              file=sys.stderr)
        return 2
    port = args.port or free_port()
    on_signals(_raise_stop)  # from here on: stop what was started
    try:
        start(config, scaling, port, args.ray_address, args.num_cpus, args.request_timeout_s)
        if args.port_file is not None:
            port_file_writer(args.port_file)(port)
        log.info("serving editcache.v1 on port %d (%s)", port, describe(scaling))
        threading.Event().wait()  # until a signal
    except Stopping:
        log.info("shutting down")
    except RuntimeError as exc:  # replicas that cannot start, after Ray's retries (about 2 minutes)
        print(f"editcache-serve: cannot start: {exc} (why: the replicas' errors in the log above)", file=sys.stderr)
        return 3
    finally:
        on_signals(signal.SIG_IGN)  # a second signal must not cut the shutdown short
        stop()
    return 0


def on_signals(handler: Any) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


class Stopping(Exception):
    """SIGINT or SIGTERM."""


def _raise_stop(signum: int, frame: object) -> None:
    raise Stopping(signal.Signals(signum).name)


def start(config: Config, scaling: Scaling, port: int, address: str | None, num_cpus: int | None,
          timeout_s: float | None) -> None:
    """Starts (or joins) Ray, the proxy and the replicas; returns once every replica is serving."""
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from server.serve_ray.deployment import EditcacheReplica, servicer_functions

    ray.init(address=address or "local", num_cpus=num_cpus if address is None else None, include_dashboard=False)
    on_signals(_raise_stop)  # ray.init put its own SIGTERM handler (exit at once) in place of ours
    serve.start(
        # The HTTP proxy is not used: on a free loopback port, so it takes no port anyone expects.
        http_options={"host": "127.0.0.1", "port": free_port()},
        grpc_options=gRPCOptions(port=port, grpc_servicer_functions=servicer_functions(), request_timeout_s=timeout_s),
    )
    deployment = serve.deployment(name=APP_NAME, **scaling.deployment_options(config.shutdown_grace_s))(
        EditcacheReplica
    )
    # A route prefix, though no HTTP call is served: without one Ray registers no endpoint, and the gRPC proxy
    # routes by endpoint too (it would answer "Route table is not populated yet" for good).
    serve.run(deployment.bind(config), name=APP_NAME, route_prefix="/")
    wait_for_route(port)


def wait_for_route(port: int, timeout_s: float = 120.0) -> None:
    """Until the proxy routes to the application. serve.run returns once the replicas are up, but the proxy learns
    its routes a moment later, and until then it answers every call NOT_FOUND ("Application metadata not set")."""
    import grpc
    from ray.serve.generated import serve_pb2, serve_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = serve_pb2_grpc.RayServeAPIServiceStub(channel)
        request = serve_pb2.ListApplicationsRequest()  # type: ignore[attr-defined]  # generated, untyped
        while True:
            try:  # UNAVAILABLE: "Route table is not populated yet."
                names = stub.ListApplications(request, timeout=10).application_names
                if APP_NAME in names:
                    return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gRPC proxy on port {port} did not route to {APP_NAME!r} in {timeout_s:g} s")
            time.sleep(0.1)


def stop() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


def describe(scaling: Scaling) -> str:
    if scaling.min_replicas is None:
        return f"{scaling.replicas} replicas"
    return (f"autoscaling {scaling.min_replicas}..{scaling.max_replicas} replicas at "
            f"{scaling.target_ongoing_requests:g} requests each")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
