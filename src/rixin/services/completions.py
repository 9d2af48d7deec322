"""Legacy text completions, including fill-in-the-middle (``suffix``) for code."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from rixin.errors import InvalidRequest, UnsupportedParameter
from rixin.observability import Metrics
from rixin.schemas.chat import CompletionRequest
from rixin.services.chat import _FINGERPRINT, _usage, new_id
from rixin.services.models import ModelManager
from rixin.services.reply import Reply
from rixin.services.streaming import sse_stream
from rixin.settings import Settings

_PLATFORM_FIELDS = {"model", "user", "stream_options", "best_of"}


class CompletionService:
    def __init__(self, models: ModelManager, metrics: Metrics, settings: Settings) -> None:
        self.models = models
        self.metrics = metrics
        self.settings = settings

    async def create(self, req: CompletionRequest) -> Reply:
        served = self.models.get(req.model, "chat")
        self._validate(req, served.capabilities.fim, served.capabilities.logprobs)
        body = req.known(exclude=_PLATFORM_FIELDS)
        body["stream"] = bool(req.stream)
        if req.stream:
            body["stream_options"] = {"include_usage": True}
        router = served.require_router()
        if not req.stream:
            routed = await router.call(lambda backend: backend.complete(body))
            return Reply(self._finish(routed.value, req), routed.replica)
        stream = await router.open_stream(lambda backend: backend.stream_complete(body))
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        chunks = self._chunks(stream, req, include_usage)
        return Reply(sse_stream(chunks, on_close=stream.aclose), stream.replica)

    def _validate(self, req: CompletionRequest, fim: bool, logprobs: bool) -> None:
        if req.n is not None and req.n > self.settings.max_n:
            raise InvalidRequest(f"n must be at most {self.settings.max_n}.", param="n")
        if req.max_tokens is not None and req.max_tokens > self.settings.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens must be at most {self.settings.max_tokens_limit}.",
                param="max_tokens",
            )
        if req.suffix is not None and not fim:
            raise UnsupportedParameter(
                "This model does not support fill-in-the-middle (suffix).", param="suffix"
            )
        if req.logprobs and not logprobs:
            raise UnsupportedParameter("This model does not return logprobs.", param="logprobs")
        if req.best_of is not None and req.best_of > 1:
            raise UnsupportedParameter("best_of is not supported.", param="best_of")
        if req.stream_options is not None and not req.stream:
            raise InvalidRequest(
                "stream_options is only allowed when stream is true.", param="stream_options"
            )

    def _finish(self, result: dict[str, Any], req: CompletionRequest) -> dict[str, Any]:
        usage = _usage(result.get("usage"))
        self.metrics.count_tokens(req.model, usage["prompt_tokens"], usage["completion_tokens"])
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [_choice(c) for c in result.get("choices", [])],
            "usage": usage,
            "system_fingerprint": _FINGERPRINT,
        }

    async def _chunks(
        self, stream: AsyncIterator[dict[str, Any]], req: CompletionRequest, include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        base = {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.model,
            "system_fingerprint": _FINGERPRINT,
        }
        usage = None
        async for chunk in stream:
            if chunk.get("usage"):
                usage = _usage(chunk["usage"])
            choices = [_choice(c) for c in chunk.get("choices", [])]
            if choices:
                yield {**base, "choices": choices}
        if usage is not None:
            self.metrics.count_tokens(req.model, usage["prompt_tokens"], usage["completion_tokens"])
            if include_usage:
                yield {**base, "choices": [], "usage": usage}


def _choice(raw: dict[str, Any]) -> dict[str, Any]:
    finish = raw.get("finish_reason")
    if finish is not None and finish not in ("stop", "length", "content_filter"):
        finish = "stop"
    return {
        "index": raw.get("index", 0),
        "text": raw.get("text") or "",
        "logprobs": _legacy_logprobs(raw.get("logprobs")),
        "finish_reason": finish,
    }


def _legacy_logprobs(raw: Any) -> dict[str, Any] | None:
    """llama.cpp answers in the chat shape; ``/v1/completions`` wants the legacy one."""
    if not raw:
        return None
    if "tokens" in raw:
        return dict(raw)
    content = raw.get("content") or []
    tokens = [t.get("token", "") for t in content]
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [float(t.get("logprob", 0.0)) for t in content],
        "top_logprobs": [
            {e.get("token", ""): float(e.get("logprob", 0.0)) for e in t.get("top_logprobs", [])}
            for t in content
        ],
        "text_offset": offsets,
    }
