"""EditService over gRPC: convert, authorize, call the edit memory's use cases."""

from __future__ import annotations

import grpc

from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from server.auth.roles import Role
from server.servicers.convert import edit_event_to_pb, edit_spec_from_pb, edit_to_pb
from server.servicers.rpc import Servicer, token_name, unary


class EditServicer(Servicer, pb_grpc.EditServiceServicer):
    @unary(Role.WRITE)
    async def AddEdits(self, request: pb.AddEditsRequest, context: grpc.aio.ServicerContext) -> pb.AddEditsResponse:
        edits = await self.service.edits.add(
            request.namespace, [edit_spec_from_pb(e) for e in request.edits], token_name(self, context),
            supersede=not request.skip_supersede,
        )
        return pb.AddEditsResponse(edits=[edit_to_pb(e) for e in edits])

    @unary(Role.READ)
    async def GetEdit(self, request: pb.GetEditRequest, context: grpc.aio.ServicerContext) -> pb.GetEditResponse:
        if not request.history:
            return pb.GetEditResponse(edit=edit_to_pb(await self.service.edits.get(request.namespace, request.id)))
        edit, earlier = await self.service.edits.history(request.namespace, request.id)
        return pb.GetEditResponse(edit=edit_to_pb(edit), history=[edit_to_pb(e) for e in earlier])

    @unary(Role.READ)
    async def ListEdits(self, request: pb.ListEditsRequest, context: grpc.aio.ServicerContext) -> pb.ListEditsResponse:
        page = await self.service.edits.page(request.namespace, request.page_size, request.page_token)
        return pb.ListEditsResponse(
            edits=[edit_to_pb(e) for e in page.edits], next_page_token=page.next_page_token, total=page.total
        )

    @unary(Role.WRITE)
    async def UpdateEdit(
        self, request: pb.UpdateEditRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateEditResponse:
        edit = await self.service.edits.update(
            request.namespace, request.id, edit_spec_from_pb(request.edit), token_name(self, context)
        )
        return pb.UpdateEditResponse(edit=edit_to_pb(edit))

    @unary(Role.WRITE)
    async def DeleteEdit(
        self, request: pb.DeleteEditRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteEditResponse:
        deletion = await self.service.edits.delete(request.namespace, request.id, token_name(self, context))
        return pb.DeleteEditResponse(
            edit=edit_to_pb(deletion.edit), restored=edit_to_pb(deletion.restored) if deletion.restored else None
        )

    @unary(Role.ADMIN)
    async def ListEditEvents(
        self, request: pb.ListEditEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEditEventsResponse:
        page = await self.service.edits.events(request.namespace, request.page_size, request.page_token,
                                               request.edit_id)
        return pb.ListEditEventsResponse(
            events=[edit_event_to_pb(e) for e in page.events], next_page_token=page.next_page_token
        )
