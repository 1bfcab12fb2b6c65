"""EditService and Correct over HTTP: /v1/edits (add, list, get with history, update, delete), /v1/events (the
audit log) and /v1/corrections.

Each route authorizes as the RPC it mirrors (named in the call) and calls the edit memory's use cases.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from server.auth.authorizer import Authorizer
from server.auth.roles import Role
from server.http.auth import authorize, namespace_of
from server.http.convert import (
    correction_json,
    correction_request_from,
    deletion_json,
    edit_json,
    event_json,
    history_json,
    spec_from,
)
from server.http.schemas import AddEditsBody, CorrectionBody, EditBody
from server.service import ServiceHolder
from server.service.answers import never

# The proto's uint32: a negative size would otherwise reach the store as "no limit".
PageSize = Annotated[int, Query(ge=0)]


def edits_router(holder: ServiceHolder, auth: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/edits")
    async def add_edits(body: AddEditsBody, request: Request) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.WRITE, "AddEdits", namespace)
        edits = await holder.get().edits.add(
            namespace, [spec_from(e) for e in body.edits], auth.token_name(request.headers.items()),
            supersede=not body.skip_supersede,
        )
        return {"object": "list", "data": [edit_json(e) for e in edits]}

    @router.get("/edits")
    async def list_edits(request: Request, page_size: PageSize = 0, page_token: str = "") -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.READ, "ListEdits", namespace)
        page = await holder.get().edits.page(namespace, page_size, page_token)
        return {"object": "list", "data": [edit_json(e) for e in page.edits],
                "next_page_token": page.next_page_token or None, "total": page.total}

    @router.get("/edits/{edit_id}")
    async def get_edit(edit_id: str, request: Request, history: bool = False) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.READ, "GetEdit", namespace)
        if not history:
            return edit_json(await holder.get().edits.get(namespace, edit_id))
        return history_json(*await holder.get().edits.history(namespace, edit_id))

    # PUT, not PATCH: UpdateEdit replaces all of the edit's fields (one left out is emptied), it does not merge.
    @router.put("/edits/{edit_id}")
    async def update_edit(edit_id: str, body: EditBody, request: Request) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.WRITE, "UpdateEdit", namespace)
        edit = await holder.get().edits.update(
            namespace, edit_id, spec_from(body), auth.token_name(request.headers.items())
        )
        return edit_json(edit)

    @router.delete("/edits/{edit_id}")
    async def delete_edit(edit_id: str, request: Request) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.WRITE, "DeleteEdit", namespace)
        deletion = await holder.get().edits.delete(namespace, edit_id, auth.token_name(request.headers.items()))
        return deletion_json(deletion)

    @router.get("/events")
    async def list_edit_events(
        request: Request, page_size: PageSize = 0, page_token: str = "", edit_id: str = ""
    ) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.ADMIN, "ListEditEvents", namespace)
        page = await holder.get().edits.events(namespace, page_size, page_token, edit_id)
        return {"object": "list", "data": [event_json(e) for e in page.events],
                "next_page_token": page.next_page_token or None}

    @router.post("/corrections")
    async def correct(body: CorrectionBody, request: Request) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.WRITE, "Correct", namespace)
        correction = await holder.get().edits.correct(
            correction_request_from(body, namespace), never, auth.token_name(request.headers.items())
        )
        return correction_json(correction)

    return router
