"""``/v1/assistants`` (Assistants v2): create, list, retrieve, modify, delete.

OpenAI requires an ``OpenAI-Beta: assistants=v2`` header on these routes; rixin accepts requests
with or without it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from rixin.api.deps import PrincipalDep, ServicesDep
from rixin.schemas.assistants import (
    CreateAssistantRequest,
    DeleteAssistantResponse,
    ModifyAssistantRequest,
)

router = APIRouter(prefix="/v1/assistants", tags=["assistants"])

Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]


@router.post("")
async def create_assistant(
    body: CreateAssistantRequest, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.assistants.create(principal.project_id, body)


@router.get("")
async def list_assistants(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    page = await services.assistants.list(
        principal.project_id, limit=limit, order=order, after=after, before=before
    )
    return page.body()


@router.get("/{assistant_id}")
async def retrieve_assistant(
    assistant_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.assistants.retrieve(principal.project_id, assistant_id)


@router.post("/{assistant_id}")
async def modify_assistant(
    assistant_id: str,
    body: ModifyAssistantRequest,
    services: ServicesDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    return await services.assistants.modify(principal.project_id, assistant_id, body)


@router.delete("/{assistant_id}")
async def delete_assistant(
    assistant_id: str, services: ServicesDep, principal: PrincipalDep
) -> DeleteAssistantResponse:
    return await services.assistants.delete(principal.project_id, assistant_id)
