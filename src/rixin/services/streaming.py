"""Server-sent events: framing, in-band errors, and tool calls reassembled from streamed text."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rixin.errors import RixinError

log = logging.getLogger("rixin.streaming")

Extractor = Callable[[str | None], list[dict[str, Any]] | None]
ARGUMENT_PIECE = 24
_TOOL_STARTS = ("{", "[", "`", "<")


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def sse_stream(
    events: AsyncIterator[dict[str, Any]],
    *,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """Frame ``events`` as SSE; a failure after the headers is sent as an error event, then the
    stream ends without ``[DONE]`` (the OpenAI client raises ``APIError``)."""
    try:
        async for event in events:
            yield sse_event(event)
        yield b"data: [DONE]\n\n"
    except RixinError as exc:
        log.warning("stream failed: %s", exc.message, extra={"code": exc.code})
        yield sse_event(exc.body())
    except Exception:
        log.exception("stream failed")
        yield sse_event(RixinError("The stream was interrupted by a server error.").body())
    finally:
        if on_close is not None:
            await on_close()


@dataclass
class _ChoiceState:
    started: bool = False
    mode: str | None = None  # None (undecided) | "text" | "tool"
    buffer: str = ""
    finished: bool = False


class ToolStreamAssembler:
    """Turns backend chunk choices into client chunk choices.

    Without an extractor, content passes straight through. With one, content that opens like a
    tool call (``{``, ``[``, a fence, ``<tool_call>``; always when decoding is constrained) is held
    back until the choice finishes, then sent as ``delta.tool_calls`` deltas that reassemble to
    valid JSON; anything else streams as text as soon as its first character is known.
    """

    def __init__(self, extract: Extractor | None, constrained: bool) -> None:
        self.extract = extract
        self.constrained = constrained
        self.states: dict[int, _ChoiceState] = {}

    def feed(self, choice: dict[str, Any]) -> list[dict[str, Any]]:
        index = int(choice.get("index", 0))
        state = self.states.setdefault(index, _ChoiceState())
        if state.finished:
            return []
        delta = choice.get("delta") or {}
        out: list[dict[str, Any]] = []
        if not state.started:
            state.started = True
            out.append(_choice(index, {"role": "assistant", "content": ""}))
        if delta.get("tool_calls"):
            out.append(_choice(index, {"tool_calls": delta["tool_calls"]}))
        content = delta.get("content")
        if content:
            out.extend(self._content(index, state, content, choice.get("logprobs")))
        finish = choice.get("finish_reason")
        if finish:
            out.extend(self._finish(index, state, finish))
        return out

    def close(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for index, state in self.states.items():
            if not state.finished:
                out.extend(self._finish(index, state, "stop"))
        return out

    def _content(
        self, index: int, state: _ChoiceState, content: str, logprobs: Any
    ) -> list[dict[str, Any]]:
        if self.extract is None or state.mode == "text":
            return [_choice(index, {"content": content}, logprobs)]
        state.buffer += content
        if state.mode is None:
            head = state.buffer.lstrip()
            if not head:
                return []
            if self.constrained or head.startswith(_TOOL_STARTS):
                state.mode = "tool"
                return []
            state.mode = "text"
            text, state.buffer = state.buffer, ""
            return [_choice(index, {"content": text}, logprobs)]
        return []

    def _finish(self, index: int, state: _ChoiceState, finish: str) -> list[dict[str, Any]]:
        state.finished = True
        out: list[dict[str, Any]] = []
        calls = self.extract(state.buffer) if self.extract and state.buffer else None
        if calls:
            out.extend(_call_deltas(index, calls))
            finish = "tool_calls"
        elif state.buffer:
            out.append(_choice(index, {"content": state.buffer}))
        state.buffer = ""
        out.append(_choice(index, {}, finish_reason=finish))
        return out


def _choice(
    index: int, delta: dict[str, Any], logprobs: Any = None, finish_reason: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish_reason}
    if logprobs:
        out["logprobs"] = {"content": logprobs.get("content"), "refusal": None}
    return out


def _call_deltas(index: int, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for position, call in enumerate(calls):
        function = call["function"]
        head = {
            "index": position,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        out.append(_choice(index, {"tool_calls": [head]}))
        arguments: str = function["arguments"]
        for start in range(0, len(arguments), ARGUMENT_PIECE):
            piece = arguments[start : start + ARGUMENT_PIECE]
            out.append(
                _choice(
                    index, {"tool_calls": [{"index": position, "function": {"arguments": piece}}]}
                )
            )
    return out
