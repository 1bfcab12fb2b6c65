"""One replica: the service editcache-server builds, its editcache.v1 RPCs forwarded from Ray Serve's gRPC proxy.

The proxy calls a replica's method named after the RPC (the last part of the gRPC path), passing the request and
a copy of the call's context as `grpc_context`. The methods are made from the services' descriptors, so every RPC
the protos declare is carried, and each hands the call to the same servicer editcache-server registers.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from editcache.v1 import chat_pb2 as chat_pb
from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import parametric_pb2 as parametric_pb
from server.app import SERVICE_NAMES, build_service
from server.auth.authorizer import Authorizer
from server.config import Config
from server.serve_ray.context import Aborted, ProxiedContext, RayContext
from server.service import Service, ServiceHolder
from server.servicers.chat import ChatServicer
from server.servicers.edits import EditServicer
from server.servicers.inference import InferenceServicer
from server.servicers.parametric import ParametricServicer
from server.servicers.rpc import Servicer

log = logging.getLogger(__name__)

REPLICA_METADATA_KEY = "editcache-replica"  # trailing metadata naming the replica that answered

SERVICES: tuple[tuple[ServiceDescriptor, type[Servicer]], ...] = (
    (pb.DESCRIPTOR.services_by_name["EditService"], EditServicer),
    (pb.DESCRIPTOR.services_by_name["InferenceService"], InferenceServicer),
    (parametric_pb.DESCRIPTOR.services_by_name["ParametricService"], ParametricServicer),
    (chat_pb.DESCRIPTOR.services_by_name["ChatService"], ChatServicer),
)
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]


def servicer_functions() -> list[str]:
    """Import paths of the generated add_*Servicer_to_server functions, for Ray's gRPCOptions: the proxy registers
    the services with them (their handlers replaced by its own) so that it accepts their RPCs."""
    services = [*(descriptor for descriptor, _ in SERVICES), HEALTH]
    return [f"{stub_module(d)}.add_{d.name}Servicer_to_server" for d in services]


def stub_module(service: ServiceDescriptor) -> str:
    """editcache/v1/editcache.proto -> editcache.v1.editcache_pb2_grpc (grpc_tools' naming)."""
    return service.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc"


@dataclass
class DataDirSlot:
    """A replica's own data directory (its index files) under the shared --data-dir: replica-0, replica-1, ...

    Held by an flock for the life of the process, so two live replicas never share one, and a replica that Ray
    starts after one died (SIGKILL releases the lock) takes the dead one's directory and its index files."""

    path: Path
    _lock: IO[str]

    @classmethod
    def claim(cls, base: Path) -> DataDirSlot:
        index = 0
        while True:
            path = base / f"replica-{index}"
            path.mkdir(parents=True, exist_ok=True)
            lock = open(path / ".lock", "a")  # noqa: SIM115 - kept open: the flock lasts as long as the file is
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                index += 1
                continue
            return cls(path, lock)


class EditcacheReplica:
    """The Ray Serve deployment class (editcache-serve wraps it with serve.deployment). Its RPC methods are added
    below from SERVICES."""

    def __init__(self, config: Config) -> None:
        logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        auth = Authorizer.from_file(config.tokens_file)
        self._slot = DataDirSlot.claim(config.data_dir)
        config = dataclasses.replace(config, data_dir=self._slot.path)
        self.name = replica_name()
        log.info("replica %s: data directory %s; loading", self.name, self._slot.path)
        self._service: Service | None = build_service(config)
        holder = ServiceHolder()
        holder.set(self._service)
        self._servicers: dict[str, Servicer] = {}
        for descriptor, servicer_class in SERVICES:
            servicer = servicer_class(holder, auth)
            self._servicers.update((method, servicer) for method in descriptor.methods_by_name)
        log.info("replica %s ready", self.name)

    async def Check(self, request: health_pb2.HealthCheckRequest, grpc_context: RayContext) -> Message:
        """grpc.health.v1 Check: a replica takes calls only once built, so it is serving."""
        if request.service not in ("", *SERVICE_NAMES):
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details(f"unknown service {request.service!r}")
            raise Aborted(request.service)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def call(self, rpc: str, request: Message, grpc_context: RayContext) -> Message:
        context = self._context(grpc_context)
        method = cast(Callable[..., Coroutine[Any, Any, Message]], getattr(self._servicers[rpc], rpc))
        try:
            return await method(request, context)
        finally:
            context.end()

    async def stream(self, rpc: str, request: Message, grpc_context: RayContext) -> AsyncIterator[Message]:
        context = self._context(grpc_context)
        method = cast(Callable[..., AsyncIterator[Message]], getattr(self._servicers[rpc], rpc))
        try:
            async for message in method(request, context):
                yield message
        finally:
            context.end()

    def _context(self, grpc_context: RayContext) -> ProxiedContext:
        # Before any message: the proxy copies the replica's trailing metadata onto the call with each one.
        grpc_context.set_trailing_metadata([(REPLICA_METADATA_KEY, self.name)])
        return ProxiedContext(grpc_context)

    def __del__(self) -> None:
        """Ray Serve calls this when it stops the replica: the model thread and stores close, as on SIGTERM. Once:
        the garbage collector may call it again."""
        service, self._service = getattr(self, "_service", None), None  # None: the constructor failed before it
        if service is not None:
            service.close()


def replica_name() -> str:
    """Ray's id of this replica (a restarted replica gets a new one)."""
    from ray import serve

    return str(serve.get_replica_context().replica_id.unique_id)


def _unary(rpc: str) -> Callable[..., Coroutine[Any, Any, Message]]:
    async def forward(self: EditcacheReplica, request: Message, grpc_context: RayContext) -> Message:
        return await self.call(rpc, request, grpc_context)

    forward.__name__ = forward.__qualname__ = rpc
    return forward


def _streaming(rpc: str) -> Callable[..., AsyncIterator[Message]]:
    async def forward(self: EditcacheReplica, request: Message, grpc_context: RayContext) -> AsyncIterator[Message]:
        async for message in self.stream(rpc, request, grpc_context):
            yield message

    forward.__name__ = forward.__qualname__ = rpc
    return forward


def _add_rpc_methods() -> None:
    for descriptor, _ in SERVICES:
        for method in descriptor.methods:
            if method.client_streaming:
                raise TypeError(f"{method.full_name}: client streaming is not forwarded (no such RPC in the API yet)")
            setattr(EditcacheReplica, method.name, (_streaming if method.server_streaming else _unary)(method.name))


_add_rpc_methods()
