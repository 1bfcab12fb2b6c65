"""ParametricService: write stored edits into the weights, roll them back, list them, export the model.

Every step that touches the model runs on the model thread; weights change only in the final
commit (or a rollback), so no request ever sees half-written weights.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path
from time import perf_counter
from typing import TypeVar

import grpc

from editcache.v1 import parametric_pb2 as pb
from editcache.v1 import parametric_pb2_grpc as pb_grpc
from server.auth import Authorizer, Role
from server.engine import EngineHolder
from server.errors import InvalidArgument
from server.parametric.editor import MethodRequest
from server.parametric.ledger import BakedEdit
from server.parametric.targets import Progress
from server.servicers.rpc import caller_gone, streaming, unary
from server.validation import check_edit_id, check_namespace

T = TypeVar("T")

METHODS = {
    pb.PARAMETRIC_METHOD_ROME: "rome",
    pb.PARAMETRIC_METHOD_MEMIT: "memit",
    pb.PARAMETRIC_METHOD_FT: "ft",
}
METHOD_TO_PB = {name: value for value, name in METHODS.items()}


class ParametricServicer(pb_grpc.ParametricServiceServicer):
    def __init__(self, holder: EngineHolder, auth: Authorizer) -> None:
        self._holder = holder
        self._auth = auth

    @streaming
    async def ApplyParametric(
        self, request: pb.ApplyParametricRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ApplyParametricResponse]:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.ADMIN, "ApplyParametric")
        engine = self._holder.get()
        namespace = check_namespace(request.namespace)
        method = method_request_from_pb(request)
        ids = [check_edit_id(i) for i in request.edit_ids]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("edit_ids lists an edit twice; give each once")
        if len(ids) > engine.config.limits.max_edits_per_request:
            raise InvalidArgument(f"{len(ids)} edit ids; at most {engine.config.limits.max_edits_per_request} per call")
        edits = [await engine.in_io(engine.memory.get, namespace, i) for i in ids]
        started = perf_counter()
        gone = caller_gone(context)
        steps = engine.parametric.compute(method, edits)
        try:
            while True:
                (progress, deltas), _ = await engine.worker.run(lambda: _advance(steps), gone)
                if progress is None:
                    break
                yield pb.ApplyParametricResponse(progress=progress_to_pb(progress))
        finally:
            steps.close()
        assert deltas is not None
        application, _ = await engine.worker.run(lambda: engine.parametric.commit(namespace, method, deltas), gone)
        baked = [b for i in ids if (b := engine.parametric.baked(namespace, i)) is not None]
        yield pb.ApplyParametricResponse(result=pb.ApplyParametricResult(
            application_id=application, edits=[baked_to_pb(b) for b in baked], seconds=perf_counter() - started,
        ))

    @unary
    async def RollbackParametric(
        self, request: pb.RollbackParametricRequest, context: grpc.aio.ServicerContext
    ) -> pb.RollbackParametricResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.ADMIN, "RollbackParametric")
        engine = self._holder.get()
        namespace, edit_id = check_namespace(request.namespace), check_edit_id(request.edit_id)
        removed, _ = await engine.worker.run(lambda: engine.parametric.rollback(namespace, edit_id))
        return pb.RollbackParametricResponse(rolled_back=baked_to_pb(removed))

    @unary
    async def ListBakedEdits(
        self, request: pb.ListBakedEditsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBakedEditsResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.READ, "ListBakedEdits")
        engine = self._holder.get()
        namespace = check_namespace(request.namespace)
        edits = await engine.in_io(engine.parametric.baked_edits, namespace)
        return pb.ListBakedEditsResponse(edits=[baked_to_pb(b) for b in edits])

    @unary
    async def ExportModel(
        self, request: pb.ExportModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportModelResponse:
        self._auth.check(context.invocation_metadata() or (), None, Role.ADMIN, "ExportModel")
        engine = self._holder.get()
        if not request.path.strip():
            raise InvalidArgument("path is empty; give an absolute directory path on the server")
        path = Path(request.path)
        await engine.worker.run(lambda: engine.parametric.export(path))
        return pb.ExportModelResponse(path=str(path), baked_edits=len(engine.parametric.baked_edits()))


def _advance(steps: Generator[Progress, None, T]) -> tuple[Progress | None, T | None]:
    """One step: (its progress, None), or (None, the result) once the computation is done."""
    try:
        return next(steps), None
    except StopIteration as done:
        return None, done.value


def method_request_from_pb(request: pb.ApplyParametricRequest) -> MethodRequest:
    if request.method not in METHODS:
        raise InvalidArgument("method is unset or unknown; use ROME, MEMIT or FT")
    options = request.options
    steps = options.steps if options.HasField("steps") else None
    if steps is not None and not 1 <= steps <= 1000:
        raise InvalidArgument(f"options.steps must be in [1, 1000], got {steps}")
    for name in ("lr", "mom2_weight", "norm_constraint"):
        if options.HasField(name) and not getattr(options, name) > 0:
            raise InvalidArgument(f"options.{name} must be positive, got {getattr(options, name)}")
    return MethodRequest(
        method=METHODS[request.method],
        layer=options.layer if options.HasField("layer") else None,
        layers=tuple(options.layers),
        steps=steps,
        lr=options.lr if options.HasField("lr") else None,
        mom2_weight=options.mom2_weight if options.HasField("mom2_weight") else None,
        norm_constraint=options.norm_constraint if options.HasField("norm_constraint") else None,
        in_gate=not options.remove_from_gate,
    )


def progress_to_pb(progress: Progress) -> pb.ParametricProgress:
    return pb.ParametricProgress(
        stage=progress.stage, step=progress.step, total=progress.total, loss=progress.loss,
        edit_id=progress.edit_id or "",
    )


def baked_to_pb(baked: BakedEdit) -> pb.BakedEdit:
    return pb.BakedEdit(
        namespace=baked.namespace, edit_id=baked.edit_id, method=METHOD_TO_PB[baked.method],
        application_id=baked.application, modules=list(baked.modules), in_gate=baked.in_gate,
        created_at_unix_s=baked.created_at_unix_s,
    )
