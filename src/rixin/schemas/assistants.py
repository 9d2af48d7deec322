"""Assistants v2 request bodies (OpenAI's names and field order; see openapi.yaml).

``CreateAssistantRequest``, ``ModifyAssistantRequest``, ``CreateThreadRequest``,
``ModifyThreadRequest``, ``CreateMessageRequest``, ``ModifyMessageRequest``,
``CreateRunRequest``, ``CreateThreadAndRunRequest``, ``ModifyRunRequest`` and
``SubmitToolOutputsRunRequest``. Tools, tool choices and response formats stay loosely typed
here: ``rixin.services.assistants`` checks them against the tool registry and names the
offending ``param``. Response bodies are plain dicts built by the service and validated against
the spec by the tests (``AssistantObject``, ``ThreadObject``, ``MessageObject``, ``RunObject``,
``RunStepObject``, ``AssistantStreamEvent``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from rixin.schemas.common import OpenAIBaseModel

Metadata = Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(ge=0.0, le=1.0)]
TokenLimit = Annotated[int, Field(ge=1)]


class TruncationObject(OpenAIBaseModel):
    type: Literal["auto", "last_messages"]
    last_messages: Annotated[int, Field(ge=1)] | None = None


class CreateAssistantRequest(OpenAIBaseModel):
    model: str
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    instructions: Annotated[str, Field(max_length=256_000)] | None = None
    reasoning_effort: str | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_resources: dict[str, Any] | None = None
    metadata: Metadata | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: str | dict[str, Any] | None = None


class ModifyAssistantRequest(OpenAIBaseModel):
    model: str | None = None
    reasoning_effort: str | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    instructions: Annotated[str, Field(max_length=256_000)] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_resources: dict[str, Any] | None = None
    metadata: Metadata | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: str | dict[str, Any] | None = None


class CreateMessageRequest(OpenAIBaseModel):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[dict[str, Any]], Field(min_length=1)]
    attachments: list[dict[str, Any]] | None = None
    metadata: Metadata | None = None


class ModifyMessageRequest(OpenAIBaseModel):
    metadata: Metadata | None = None


class CreateThreadRequest(OpenAIBaseModel):
    messages: Annotated[list[CreateMessageRequest], Field(max_length=1000)] | None = None
    tool_resources: dict[str, Any] | None = None
    metadata: Metadata | None = None


class ModifyThreadRequest(OpenAIBaseModel):
    tool_resources: dict[str, Any] | None = None
    metadata: Metadata | None = None


class RunOptions(OpenAIBaseModel):
    """What ``CreateRunRequest`` and ``CreateThreadAndRunRequest`` share."""

    assistant_id: str
    model: str | None = None
    instructions: str | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=20)] | None = None
    metadata: Metadata | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stream: bool | None = None
    max_prompt_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None
    truncation_strategy: TruncationObject | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: str | dict[str, Any] | None = None


class CreateRunRequest(RunOptions):
    reasoning_effort: str | None = None
    additional_instructions: str | None = None
    additional_messages: Annotated[list[CreateMessageRequest], Field(max_length=1000)] | None = None


class CreateThreadAndRunRequest(RunOptions):
    thread: CreateThreadRequest | None = None
    tool_resources: dict[str, Any] | None = None


class ModifyRunRequest(OpenAIBaseModel):
    metadata: Metadata | None = None


class ToolOutput(OpenAIBaseModel):
    tool_call_id: str | None = None
    output: str | None = None


class SubmitToolOutputsRunRequest(OpenAIBaseModel):
    tool_outputs: Annotated[list[ToolOutput], Field(max_length=128)]
    stream: bool | None = None


class DeleteAssistantResponse(OpenAIBaseModel):
    id: str
    object: Literal["assistant.deleted"] = "assistant.deleted"
    deleted: bool = True


class DeleteThreadResponse(OpenAIBaseModel):
    id: str
    object: Literal["thread.deleted"] = "thread.deleted"
    deleted: bool = True


class DeleteMessageResponse(OpenAIBaseModel):
    id: str
    object: Literal["thread.message.deleted"] = "thread.message.deleted"
    deleted: bool = True
