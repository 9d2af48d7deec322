"""``/v1/conversations`` bodies (OpenAI's ``CreateConversationBody``, ``UpdateConversationBody``,
``ConversationResource``, ``DeletedConversationResource``). Items are validated by the agent
item normalizer, like a response's ``input``; item lists are built as dicts by the service.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from rixin.schemas.common import OpenAIBaseModel


class CreateConversationBody(OpenAIBaseModel):
    metadata: dict[str, str] | None = None
    items: Annotated[list[dict[str, Any]], Field(max_length=20)] | None = None


class UpdateConversationBody(OpenAIBaseModel):
    metadata: dict[str, str]


class CreateConversationItemsBody(OpenAIBaseModel):
    items: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=20)]


class ConversationResource(OpenAIBaseModel):
    id: str
    object: Literal["conversation"] = "conversation"
    metadata: dict[str, str] | None = None
    created_at: int


class DeletedConversationResource(OpenAIBaseModel):
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True
    id: str
