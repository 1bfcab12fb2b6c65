"""EditService and Correct over HTTP: /v1/edits (add, list, get, delete) and /v1/corrections.

Each route authorizes as the RPC it mirrors (named in the call) and calls the edit memory's use cases.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.auth.authorizer import Authorizer
from server.auth.roles import Role
from server.http.auth import authorize, namespace_of
from server.http.convert import correction_json, correction_request_from, edit_json, spec_from
from server.http.schemas import AddEditsBody, CorrectionBody
from server.service import ServiceHolder
from server.service.answers import never


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
    async def list_edits(request: Request, page_size: int = 0, page_token: str = "") -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.READ, "ListEdits", namespace)
        page = await holder.get().edits.page(namespace, page_size, page_token)
        return {"object": "list", "data": [edit_json(e) for e in page.edits],
                "next_page_token": page.next_page_token or None, "total": page.total}

    @router.get("/edits/{edit_id}")
    async def get_edit(edit_id: str, request: Request) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.READ, "GetEdit", namespace)
        return edit_json(await holder.get().edits.get(namespace, edit_id))

    @router.delete("/edits/{edit_id}")
    async def delete_edit(edit_id: str, request: Request) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.WRITE, "DeleteEdit", namespace)
        deletion = await holder.get().edits.delete(namespace, edit_id, auth.token_name(request.headers.items()))
        return {**edit_json(deletion.edit), "deleted": True}

    @router.post("/corrections")
    async def correct(body: CorrectionBody, request: Request) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.WRITE, "Correct", namespace)
        correction = await holder.get().edits.correct(
            correction_request_from(body, namespace), never, auth.token_name(request.headers.items())
        )
        return correction_json(correction)

    return router
