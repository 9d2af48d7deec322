"""Chat completions: validate against the model's capabilities, route, finish the result.

Finishing means: our ids and model name, OpenAI's required fields, and tool calls that parse —
small local models write calls as text, so for them ``tool_choice`` required/named is enforced by
JSON-schema constrained decoding and calls are parsed out of the content
(``rixin.services.toolcalls``). Streams are framed by ``rixin.services.streaming``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rixin.engines.base import Capabilities
from rixin.engines.router import Router
from rixin.errors import InvalidRequest, UnsupportedParameter
from rixin.observability import Metrics
from rixin.schemas.chat import ChatCompletionRequest, NamedToolChoice
from rixin.services import toolcalls
from rixin.services.models import ModelManager
from rixin.services.reply import Reply
from rixin.services.streaming import ToolStreamAssembler, sse_stream
from rixin.settings import Settings

# Request fields the platform consumes itself, never forwarded to a backend.
_PLATFORM_FIELDS = {
    "model",
    "rixin",
    "metadata",
    "store",
    "user",
    "modalities",
    "audio",
    "reasoning_effort",
    "service_tier",
    "stream_options",
    "max_completion_tokens",
    "parallel_tool_calls",
}
_FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter", "function_call"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(24)}"


@dataclass(frozen=True)
class ChunkStream:
    """Client-ready chunk dicts of one streamed completion, and how to stop it."""

    chunks: AsyncIterator[dict[str, Any]]
    aclose: Callable[[], Awaitable[None]]
    replica: str


class ChatService:
    def __init__(self, models: ModelManager, metrics: Metrics, settings: Settings) -> None:
        self.models = models
        self.metrics = metrics
        self.settings = settings

    async def create(self, req: ChatCompletionRequest) -> Reply:
        if not req.stream:
            return await self.complete(req)
        opened = await self.open_chunks(req)
        return Reply(sse_stream(opened.chunks, on_close=opened.aclose), opened.replica)

    async def complete(self, req: ChatCompletionRequest) -> Reply:
        """A finished ``chat.completion`` (``req.stream`` is ignored); for internal callers too."""
        router, plan, body = self._prepare(req.model_copy(update={"stream": False}))
        routed = await router.call(lambda backend: backend.chat(body))
        return Reply(self._finish(routed.value, req, plan), routed.replica)

    async def open_chunks(self, req: ChatCompletionRequest) -> ChunkStream:
        """The finished ``chat.completion.chunk`` dicts of a streamed request, not yet framed.

        The agent engine consumes these directly; ``aclose`` cancels generation upstream.
        """
        req = req.model_copy(update={"stream": True})
        router, plan, body = self._prepare(req)
        stream = await router.open_stream(lambda backend: backend.stream_chat(body))
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        chunks = self._stream_chunks(stream, req, plan, include_usage)
        return ChunkStream(chunks, stream.aclose, stream.replica)

    def check(self, req: ChatCompletionRequest) -> None:
        """Raise what ``create`` would raise for ``req`` before calling a model."""
        self._prepare(req)

    def _prepare(self, req: ChatCompletionRequest) -> tuple[Router[Any], _ToolPlan, dict[str, Any]]:
        """Validate against the model's capabilities; the router, tool plan and backend body."""
        served = self.models.get(req.model, "chat")
        self._validate(req, served.capabilities)
        plan = _ToolPlan.of(req, served.capabilities)
        return served.require_router(), plan, self._backend_body(req, plan)

    # -- validation ---------------------------------------------------------------------------

    def _validate(self, req: ChatCompletionRequest, caps: Capabilities) -> None:
        if req.n is not None and req.n > self.settings.max_n:
            raise InvalidRequest(f"n must be at most {self.settings.max_n}.", param="n")
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(req, name)
            if value is not None and value > self.settings.max_tokens_limit:
                raise InvalidRequest(
                    f"{name} must be at most {self.settings.max_tokens_limit}.", param=name
                )
        if req.audio is not None or (req.modalities and set(req.modalities) - {"text"}):
            raise UnsupportedParameter(
                "Audio output is not supported by this model.", param="modalities"
            )
        if req.stream_options is not None and not req.stream:
            raise InvalidRequest(
                "stream_options is only allowed when stream is true.", param="stream_options"
            )
        if req.top_logprobs is not None and not req.logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be true.", param="logprobs")
        if req.logprobs and not caps.logprobs:
            raise UnsupportedParameter("This model does not return logprobs.", param="logprobs")
        self._validate_format(req, caps)
        self._validate_tools(req, caps)
        self._validate_content(req, caps)

    @staticmethod
    def _validate_format(req: ChatCompletionRequest, caps: Capabilities) -> None:
        fmt = req.response_format
        if fmt is None or fmt.type == "text":
            return
        if fmt.type == "json_schema":
            if fmt.json_schema is None:
                raise InvalidRequest(
                    "Missing required parameter: 'response_format.json_schema'.",
                    param="response_format.json_schema",
                )
            if not caps.json_schema:
                raise UnsupportedParameter(
                    "This model does not support json_schema.", param="response_format"
                )

    @staticmethod
    def _validate_tools(req: ChatCompletionRequest, caps: Capabilities) -> None:
        if req.tool_choice is not None and not req.tools:
            raise InvalidRequest(
                "tool_choice is only allowed when tools are specified.", param="tool_choice"
            )
        if not req.tools:
            return
        if not caps.tools:
            raise UnsupportedParameter("This model does not support tools.", param="tools")
        names = [tool.function.name for tool in req.tools]
        if len(set(names)) != len(names):
            raise InvalidRequest("Tool names must be unique.", param="tools")
        choice = req.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise InvalidRequest(
                f"tool_choice names '{choice.function.name}', which is not in tools.",
                param="tool_choice",
            )

    @staticmethod
    def _validate_content(req: ChatCompletionRequest, caps: Capabilities) -> None:
        for i, message in enumerate(req.messages):
            if not isinstance(message.content, list):
                continue
            for j, part in enumerate(message.content):
                if part.type == "text" and part.text is None:
                    raise InvalidRequest(
                        "A text content part needs 'text'.", param=f"messages[{i}].content[{j}]"
                    )
                if part.type == "image_url" and not caps.vision:
                    raise UnsupportedParameter(
                        f"Model '{req.model}' does not accept images.",
                        param=f"messages[{i}].content[{j}]",
                    )
                if part.type not in ("text", "image_url"):
                    raise UnsupportedParameter(
                        f"Content parts of type '{part.type}' are not supported by this model.",
                        param=f"messages[{i}].content[{j}].type",
                    )

    # -- request ------------------------------------------------------------------------------

    def _backend_body(self, req: ChatCompletionRequest, plan: _ToolPlan) -> dict[str, Any]:
        body = req.known(exclude=_PLATFORM_FIELDS, by_alias=True)
        if req.max_completion_tokens is not None:
            body["max_tokens"] = req.max_completion_tokens
        if req.parallel_tool_calls is not None and plan.native:
            body["parallel_tool_calls"] = req.parallel_tool_calls
        body["stream"] = bool(req.stream)
        if req.stream:
            body["stream_options"] = {"include_usage": True}
        body["messages"] = [_flatten_text_parts(m) for m in body["messages"]]
        return plan.apply(body)

    # -- response -----------------------------------------------------------------------------

    def _finish(
        self, result: dict[str, Any], req: ChatCompletionRequest, plan: _ToolPlan
    ) -> dict[str, Any]:
        choices = [self._finish_choice(c, plan) for c in result.get("choices", [])]
        usage = _usage(result.get("usage"))
        self.metrics.count_tokens(req.model, usage["prompt_tokens"], usage["completion_tokens"])
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": choices,
            "usage": usage,
            "system_fingerprint": _FINGERPRINT,
        }

    @staticmethod
    def _finish_choice(choice: dict[str, Any], plan: _ToolPlan) -> dict[str, Any]:
        raw = choice.get("message") or {}
        message: dict[str, Any] = {
            "role": "assistant",
            "content": raw.get("content"),
            "refusal": raw.get("refusal"),
        }
        finish = choice.get("finish_reason") or "stop"
        calls = raw.get("tool_calls") or plan.extract(raw.get("content"))
        if calls:
            message["content"] = None
            message["tool_calls"] = [_clean_call(c) for c in calls]
            finish = "tool_calls"
        return {
            "index": choice.get("index", 0),
            "message": message,
            "logprobs": _logprobs(choice.get("logprobs")),
            "finish_reason": finish if finish in _FINISH_REASONS else "stop",
        }

    async def _stream_chunks(
        self,
        stream: AsyncIterator[dict[str, Any]],
        req: ChatCompletionRequest,
        plan: _ToolPlan,
        include_usage: bool,
    ) -> AsyncIterator[dict[str, Any]]:
        base = {
            "id": new_id("chatcmpl"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": req.model,
            "system_fingerprint": _FINGERPRINT,
        }
        assembler = ToolStreamAssembler(plan.extract if plan.active else None, plan.constrained)
        usage: dict[str, Any] | None = None
        async for chunk in stream:
            if chunk.get("usage"):
                usage = _usage(chunk["usage"])
            for choice in chunk.get("choices", []):
                for out in assembler.feed(choice):
                    yield {**base, "choices": [out]}
        for out in assembler.close():
            yield {**base, "choices": [out]}
        if usage is not None:
            self.metrics.count_tokens(req.model, usage["prompt_tokens"], usage["completion_tokens"])
            if include_usage:
                yield {**base, "choices": [], "usage": usage}


_FINGERPRINT = "fp_rixin"


class _ToolPlan:
    """How tools are honoured for one request on one model."""

    def __init__(
        self,
        tools: list[dict[str, Any]],
        choice: Any,
        parallel: bool,
        *,
        native: bool,
    ) -> None:
        self.tools = tools
        self.choice = choice
        self.parallel = parallel
        self.native = native
        self.active = bool(tools) and choice != "none"
        self.constrained = (
            self.active and not native and (choice == "required" or isinstance(choice, dict))
        )

    @classmethod
    def of(cls, req: ChatCompletionRequest, caps: Capabilities) -> _ToolPlan:
        tools = [t.known() for t in req.tools or []]
        choice: Any = req.tool_choice
        if isinstance(choice, NamedToolChoice):
            choice = choice.known()
        parallel = req.parallel_tool_calls is not False
        return cls(tools, choice or "auto", parallel, native=not caps.constrained_tools)

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.native:
            return body
        if any(m.get("role") == "tool" for m in body["messages"]):
            body["messages"] = toolcalls.inline_tool_history(body["messages"])
        if not self.tools:
            return body
        if not self.active:
            body.pop("tools", None)
            body.pop("tool_choice", None)
            return body
        body.pop("tool_choice", None)
        if self.constrained:
            schema = toolcalls.constrained_tool_schema(self.tools, self.choice, self.parallel)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "tool_call", "strict": True, "schema": schema},
            }
        return body

    def extract(self, content: str | None) -> list[dict[str, Any]] | None:
        if not self.active or not content or self.native:
            return None
        calls = toolcalls.extract_tool_calls(content, self.tools)
        if calls and not self.parallel:
            calls = calls[:1]
        return calls


def _flatten_text_parts(message: dict[str, Any]) -> dict[str, Any]:
    """Text-only content parts become one string: every chat template renders that."""
    content = message.get("content")
    if isinstance(content, list) and all(p.get("type") == "text" for p in content):
        message = {**message, "content": "".join(p.get("text") or "" for p in content)}
    return message


def _clean_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": call.get("id") or f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": arguments},
    }


def _usage(raw: Any) -> dict[str, Any]:
    raw = raw or {}
    prompt = int(raw.get("prompt_tokens", 0))
    completion = int(raw.get("completion_tokens", 0))
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    cached = (raw.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    return usage


def _logprobs(raw: Any) -> dict[str, Any] | None:
    if not raw:
        return None
    content = raw.get("content")
    if content is None:
        return None
    return {"content": [_token_logprob(t) for t in content], "refusal": None}


def _token_logprob(token: dict[str, Any]) -> dict[str, Any]:
    return {
        "token": token.get("token", ""),
        "logprob": float(token.get("logprob", 0.0)),
        "bytes": token.get("bytes"),
        "top_logprobs": [
            {
                "token": t.get("token", ""),
                "logprob": float(t.get("logprob", 0.0)),
                "bytes": t.get("bytes"),
            }
            for t in token.get("top_logprobs", [])
        ],
    }
