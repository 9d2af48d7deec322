"""``/v1/conversations`` and their items."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from rixin.api.deps import PrincipalDep, ServicesDep
from rixin.schemas.conversations import (
    ConversationResource,
    CreateConversationBody,
    CreateConversationItemsBody,
    DeletedConversationResource,
    UpdateConversationBody,
)

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

Limit = Annotated[int, Query(ge=1, le=100)]


@router.post("")
async def create_conversation(
    body: CreateConversationBody, services: ServicesDep, principal: PrincipalDep
) -> ConversationResource:
    return await services.conversations.create(principal.project_id, body)


@router.get("/{conversation_id}")
async def retrieve_conversation(
    conversation_id: str, services: ServicesDep, principal: PrincipalDep
) -> ConversationResource:
    return await services.conversations.retrieve(principal.project_id, conversation_id)


@router.post("/{conversation_id}")
async def update_conversation(
    conversation_id: str,
    body: UpdateConversationBody,
    services: ServicesDep,
    principal: PrincipalDep,
) -> ConversationResource:
    return await services.conversations.update(principal.project_id, conversation_id, body.metadata)


@router.delete("/{conversation_id}")
async def delete_conversation(
    conversation_id: str, services: ServicesDep, principal: PrincipalDep
) -> DeletedConversationResource:
    return await services.conversations.delete(principal.project_id, conversation_id)


@router.post("/{conversation_id}/items")
async def create_items(
    conversation_id: str,
    body: CreateConversationItemsBody,
    services: ServicesDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    page = await services.conversations.add_items(principal.project_id, conversation_id, body.items)
    return page.body()


@router.get("/{conversation_id}/items")
async def list_items(
    conversation_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    page = await services.conversations.list_items(
        principal.project_id, conversation_id, limit=limit, order=order, after=after
    )
    return page.body()


@router.get("/{conversation_id}/items/{item_id}")
async def retrieve_item(
    conversation_id: str, item_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.conversations.get_item(principal.project_id, conversation_id, item_id)


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(
    conversation_id: str, item_id: str, services: ServicesDep, principal: PrincipalDep
) -> ConversationResource:
    return await services.conversations.delete_item(principal.project_id, conversation_id, item_id)
