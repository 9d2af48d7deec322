"""``POST /v1/chat/completions`` and ``POST /v1/completions`` request bodies.

OpenAI's shapes, names and ranges (see ``CreateChatCompletionRequest`` and
``CreateCompletionRequest`` in OpenAI's openapi.yaml). Responses are produced by the chat service
as plain dicts that the tests validate against the same spec.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from rixin.schemas.common import OpenAIBaseModel

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ContentPart(OpenAIBaseModel):
    type: str
    text: str | None = None
    image_url: dict[str, Any] | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None


class FunctionCall(OpenAIBaseModel):
    name: str
    arguments: str


class ToolCall(OpenAIBaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(OpenAIBaseModel):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class FunctionDefinition(OpenAIBaseModel):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(OpenAIBaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoiceFunction(OpenAIBaseModel):
    name: str


class NamedToolChoice(OpenAIBaseModel):
    type: Literal["function"]
    function: NamedToolChoiceFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JSONSchemaFormat(OpenAIBaseModel):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIBaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


Stop = str | Annotated[list[str], Field(max_length=4)] | None


class SamplingParams(OpenAIBaseModel):
    """Parameters shared by chat and text completions."""

    model: str
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    seed: int | None = None
    stop: Stop = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    user: str | None = None


class ChatRixinOptions(OpenAIBaseModel):
    """rixin extension of ``CreateChatCompletionRequest``: answer from these vector stores.

    The reply then carries ``"rixin": {"citations": [...]}`` (see ``rixin.services.grounding``).
    """

    vector_store_ids: Annotated[list[str], Field(min_length=1, max_length=10)] | None = None
    max_num_results: Annotated[int, Field(ge=1, le=20)] = 5
    score_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """Sources scoring below are dropped; what a score means depends on ``ranker``."""
    ranker: str = "auto"
    """As in vector store search: ``auto`` (hybrid, RRF: the best hit scores ~1), ``dense``
    (cosine similarity: the one a fixed "no answer" threshold suits), ``hybrid_rerank`` …"""


class ChatCompletionRequest(SamplingParams):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    # --- rixin extension -------------------------------------------------------------------
    rixin: ChatRixinOptions | None = None
    """Marked extension block: ``vector_store_ids`` asks for a grounded answer with citations."""


class CompletionRequest(SamplingParams):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    echo: bool | None = None
    best_of: Annotated[int, Field(ge=0, le=20)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        return value
