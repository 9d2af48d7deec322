"""``/v1/responses`` request bodies (OpenAI's ``CreateResponse``, same names and order).

Items and tools stay loosely typed here (``dict``): the agent engine validates them against the
tool registry and item normalizer, which know every type rixin supports and name the offending
``param``. Response bodies are built by ``rixin.services.responses`` as plain dicts that the tests
validate against ``Response`` / ``ResponseStreamEvent`` in OpenAI's openapi.yaml.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from rixin.schemas.common import OpenAIBaseModel


class ResponseFormatText(OpenAIBaseModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")] | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseTextParam(OpenAIBaseModel):
    format: ResponseFormatText | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ConversationParam(OpenAIBaseModel):
    id: str


class CreateResponse(OpenAIBaseModel):
    metadata: dict[str, str] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    previous_response_id: str | None = None
    model: str
    reasoning: dict[str, Any] | None = None
    background: bool | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tool_calls: Annotated[int, Field(ge=0)] | None = None
    text: ResponseTextParam | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    input: str | list[dict[str, Any]] | None = None
    include: list[str] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    instructions: str | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    conversation: str | ConversationParam | None = None


class DeletedResponse(OpenAIBaseModel):
    """What ``DELETE /v1/responses/{id}`` returns (the spec leaves the body open)."""

    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True
