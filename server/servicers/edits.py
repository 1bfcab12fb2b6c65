"""EditService: validate, convert, call the memory, convert back."""

from __future__ import annotations

import logging

import grpc

from editcache.v1 import editcache_pb2 as pb
from editcache.v1 import editcache_pb2_grpc as pb_grpc
from server.auth import Authorizer, Role
from server.engine import EngineHolder
from server.errors import FailedPrecondition
from server.servicers.convert import edit_spec_from_pb, edit_to_pb
from server.servicers.rpc import unary
from server.validation import check_edit_id, check_edit_specs, check_namespace, check_page_size

log = logging.getLogger(__name__)


class EditServicer(pb_grpc.EditServiceServicer):
    def __init__(self, holder: EngineHolder, auth: Authorizer) -> None:
        self._holder = holder
        self._auth = auth

    @unary
    async def AddEdits(self, request: pb.AddEditsRequest, context: grpc.aio.ServicerContext) -> pb.AddEditsResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.WRITE, "AddEdits")
        engine = self._holder.get()
        namespace = check_namespace(request.namespace)
        specs = [edit_spec_from_pb(e) for e in request.edits]
        check_edit_specs(specs, engine.config.limits)
        edits = await engine.in_io(engine.router.scope.add, namespace, specs)
        log.info("added %d edit(s) to namespace %s: %s", len(edits), namespace, ", ".join(e.id for e in edits[:8]))
        return pb.AddEditsResponse(edits=[edit_to_pb(e) for e in edits])

    @unary
    async def GetEdit(self, request: pb.GetEditRequest, context: grpc.aio.ServicerContext) -> pb.GetEditResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.READ, "GetEdit")
        engine = self._holder.get()
        edit = await engine.in_io(engine.memory.get, check_namespace(request.namespace), check_edit_id(request.id))
        return pb.GetEditResponse(edit=edit_to_pb(edit))

    @unary
    async def ListEdits(self, request: pb.ListEditsRequest, context: grpc.aio.ServicerContext) -> pb.ListEditsResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.READ, "ListEdits")
        engine = self._holder.get()
        namespace = check_namespace(request.namespace)
        check_page_size(request.page_size, engine.config.limits)
        page_size = request.page_size or engine.config.default_page_size
        page = await engine.in_io(engine.memory.page, namespace, page_size, request.page_token)
        return pb.ListEditsResponse(
            edits=[edit_to_pb(e) for e in page.edits], next_page_token=page.next_page_token, total=page.total
        )

    @unary
    async def DeleteEdit(
        self, request: pb.DeleteEditRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteEditResponse:
        self._auth.check(context.invocation_metadata() or (), request.namespace, Role.WRITE, "DeleteEdit")
        engine = self._holder.get()
        namespace, edit_id = check_namespace(request.namespace), check_edit_id(request.id)
        if engine.parametric.baked(namespace, edit_id) is not None:
            raise FailedPrecondition(f"edit {edit_id} is in the model's weights; roll it back first")
        edit = await engine.in_io(engine.memory.delete, namespace, edit_id)
        log.info("deleted edit %s from namespace %s", edit.id, edit.namespace)
        return pb.DeleteEditResponse(edit=edit_to_pb(edit))
