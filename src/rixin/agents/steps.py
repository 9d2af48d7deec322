"""The model step: one call to a chat model with the run's history and tools.

``ModelStep`` is the engine's only view of a model; ``ChatModelStep`` implements it on
``ChatService`` so every step gets the chat path's validation, routing, constrained decoding of
required tool calls on small local models and tool-call extraction from text. Steps always
stream from the backend: text reaches live listeners as it is generated, a cancelled run closes
the upstream stream at once (F5), and hostile output is cut off as soon as it is too large (B10).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rixin.agents.tools.base import ToolCall
from rixin.errors import RixinError
from rixin.schemas.chat import ChatCompletionRequest
from rixin.services.chat import ChatService

JSONDict = dict[str, Any]
OnText = Callable[[str], Awaitable[None]]


class StepError(RixinError):
    """The model's output cannot be used (too large, malformed tool calls): the run fails."""

    code = "server_error"


@dataclass
class StepRequest:
    model: str
    messages: list[JSONDict]
    tools: list[JSONDict] = field(default_factory=list)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: JSONDict | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None


@dataclass
class StepResult:
    text: str
    calls: list[ToolCall]
    finish_reason: str
    input_tokens: int = 0
    output_tokens: int = 0


class ModelStep(Protocol):
    async def __call__(self, req: StepRequest, on_text: OnText) -> StepResult: ...


class ChatModelStep:
    """A model step through ``ChatService.open_chunks``."""

    def __init__(self, chat: ChatService, *, max_output_chars: int = 1_000_000) -> None:
        self.chat = chat
        self.max_output_chars = max_output_chars

    async def __call__(self, req: StepRequest, on_text: OnText) -> StepResult:
        body: JSONDict = {
            "model": req.model,
            "messages": req.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if req.tools:
            body["tools"] = req.tools
            if req.tool_choice is not None:
                body["tool_choice"] = req.tool_choice
            if req.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = req.parallel_tool_calls
        for name in ("response_format", "max_tokens", "temperature", "top_p"):
            value = getattr(req, name)
            if value is not None:
                body[name] = value
        request = ChatCompletionRequest.model_validate(body)
        opened = await self.chat.open_chunks(request)
        try:
            return await self._consume(opened.chunks, on_text)
        finally:
            aclose = getattr(opened.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            await opened.aclose()

    async def _consume(self, chunks: Any, on_text: OnText) -> StepResult:
        text: list[str] = []
        size = 0
        calls: dict[int, JSONDict] = {}
        finish = "stop"
        usage: JSONDict = {}
        async for chunk in chunks:
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                if piece:
                    size += len(piece)
                    if size > self.max_output_chars:
                        raise StepError("The model's output exceeded the size limit.")
                    text.append(piece)
                    await on_text(piece)
                for call in delta.get("tool_calls") or []:
                    size += _merge_call(calls, call)
                    if size > self.max_output_chars:
                        raise StepError("The model's tool call exceeded the size limit.")
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
        return StepResult(
            text="".join(text),
            calls=[_tool_call(calls[i]) for i in sorted(calls)],
            finish_reason=finish,
            input_tokens=int(usage.get("prompt_tokens", 0) or 0),
            output_tokens=int(usage.get("completion_tokens", 0) or 0),
        )


def _merge_call(calls: dict[int, JSONDict], delta: JSONDict) -> int:
    index = int(delta.get("index", len(calls)))
    entry = calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
    if delta.get("id"):
        entry["id"] = delta["id"]
    function = delta.get("function") or {}
    if function.get("name"):
        entry["name"] += str(function["name"])
    piece = function.get("arguments")
    if piece:
        entry["arguments"] += piece if isinstance(piece, str) else json.dumps(piece)
    return len(str(piece or ""))


def _tool_call(entry: JSONDict) -> ToolCall:
    from rixin.services.toolcalls import new_call_id

    arguments = entry["arguments"] or "{}"
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        raise StepError("The model produced tool-call arguments that are not valid JSON.") from exc
    if not isinstance(parsed, dict):
        raise StepError("The model produced tool-call arguments that are not a JSON object.")
    if not entry["name"]:
        raise StepError("The model produced a tool call without a name.")
    return ToolCall(
        call_id=str(entry["id"] or new_call_id()), name=entry["name"], arguments=arguments
    )
