"""EditService over gRPC: convert, authorize, call the edit memory's use cases."""

from __future__ import annotations

import grpc

from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from server.auth.roles import Role
from server.servicers.convert import edit_spec_from_pb, edit_to_pb
from server.servicers.rpc import Servicer, unary


class EditServicer(Servicer, pb_grpc.EditServiceServicer):
    @unary(Role.WRITE)
    async def AddEdits(self, request: pb.AddEditsRequest, context: grpc.aio.ServicerContext) -> pb.AddEditsResponse:
        edits = await self.service.edits.add(request.namespace, [edit_spec_from_pb(e) for e in request.edits])
        return pb.AddEditsResponse(edits=[edit_to_pb(e) for e in edits])

    @unary(Role.READ)
    async def GetEdit(self, request: pb.GetEditRequest, context: grpc.aio.ServicerContext) -> pb.GetEditResponse:
        return pb.GetEditResponse(edit=edit_to_pb(await self.service.edits.get(request.namespace, request.id)))

    @unary(Role.READ)
    async def ListEdits(self, request: pb.ListEditsRequest, context: grpc.aio.ServicerContext) -> pb.ListEditsResponse:
        page = await self.service.edits.page(request.namespace, request.page_size, request.page_token)
        return pb.ListEditsResponse(
            edits=[edit_to_pb(e) for e in page.edits], next_page_token=page.next_page_token, total=page.total
        )

    @unary(Role.WRITE)
    async def DeleteEdit(
        self, request: pb.DeleteEditRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteEditResponse:
        return pb.DeleteEditResponse(edit=edit_to_pb(await self.service.edits.delete(request.namespace, request.id)))
