"""``/v1/chat/completions`` and ``/v1/completions``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from rixin.api.deps import PrincipalDep, ServicesDep
from rixin.api.sse import respond
from rixin.schemas.chat import ChatCompletionRequest, CompletionRequest

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions")
async def create_chat_completion(
    body: ChatCompletionRequest, services: ServicesDep, principal: PrincipalDep
) -> Response:
    return respond(await services.grounding.create(principal.project_id, body))


@router.post("/completions")
async def create_completion(
    body: CompletionRequest, services: ServicesDep, principal: PrincipalDep
) -> Response:
    return respond(await services.completions.create(body))
