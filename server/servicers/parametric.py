"""ParametricService over gRPC: convert, authorize, call the parametric use cases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from editcache.v1 import parametric_pb2 as pb
from editcache.v1 import parametric_pb2_grpc as pb_grpc
from server.auth.roles import Role, Scope
from server.service.parametric import Application
from server.servicers.convert import (
    application_to_pb,
    attribution_to_pb,
    baked_to_pb,
    method_request_from_pb,
    progress_to_pb,
)
from server.servicers.rpc import Servicer, caller_gone, readable_namespaces, streaming, token_name, unary


class ParametricServicer(Servicer, pb_grpc.ParametricServiceServicer):
    # Writing, rolling back and exporting the weights every namespace shares need an admin token for all of them.
    @streaming(Role.ADMIN, Scope.EVERY)
    async def ApplyParametric(
        self, request: pb.ApplyParametricRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ApplyParametricResponse]:
        steps = self.service.parametric.apply(
            request.namespace, method_request_from_pb(request), request.edit_ids, caller_gone(context),
            token_name(self, context),
        )
        async for step in steps:
            if isinstance(step, Application):
                yield pb.ApplyParametricResponse(result=application_to_pb(step))
            else:
                yield pb.ApplyParametricResponse(progress=progress_to_pb(step))

    @unary(Role.ADMIN, Scope.EVERY)
    async def RollbackParametric(
        self, request: pb.RollbackParametricRequest, context: grpc.aio.ServicerContext
    ) -> pb.RollbackParametricResponse:
        removed = await self.service.parametric.rollback(request.namespace, request.edit_id, token_name(self, context))
        return pb.RollbackParametricResponse(rolled_back=baked_to_pb(removed))

    @unary(Role.READ, Scope.READABLE)
    async def ListBakedEdits(
        self, request: pb.ListBakedEditsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBakedEditsResponse:
        edits = await self.service.parametric.baked_edits(request.namespace, readable_namespaces(self, context))
        return pb.ListBakedEditsResponse(edits=[baked_to_pb(b) for b in edits])

    @unary(Role.ADMIN, Scope.EVERY)
    async def ExportModel(
        self, request: pb.ExportModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportModelResponse:
        path, baked = await self.service.parametric.export(request.path)
        return pb.ExportModelResponse(path=str(path), baked_edits=baked)

    # Reads the served model as Score does (READ, any namespace's token): the attribution is the gradient of the same
    # teacher-forced probability, and it neither changes the weights nor reads any namespace's edits.
    @unary(Role.READ)
    async def Attribute(self, request: pb.AttributeRequest, context: grpc.aio.ServicerContext) -> pb.AttributeResponse:
        report = await self.service.parametric.attribute(
            request.prompt, request.answer, tuple(request.layers), request.top, request.steps, caller_gone(context)
        )
        return attribution_to_pb(report)

