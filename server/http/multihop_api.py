"""AnswerMultiHop over HTTP: POST /v1/multihop, the question answered step by step from the edits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.auth.authorizer import Authorizer
from server.auth.roles import Role
from server.http.auth import authorize, namespace_of
from server.http.convert import chain_json
from server.http.schemas import MultiHopBody
from server.service import ServiceHolder
from server.service.answers import ChainQuery


def multihop_router(holder: ServiceHolder, auth: Authorizer) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/multihop")
    async def answer_multihop(body: MultiHopBody, request: Request) -> dict[str, Any]:
        namespace = namespace_of(request)
        authorize(auth, request, Role.READ, "AnswerMultiHop", namespace)
        followed = await holder.get().answers.follow_chain(ChainQuery(namespace, body.question, tuple(body.steps)))
        return chain_json(followed)

    return router
