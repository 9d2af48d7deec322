"""Responses API stream events, built from the engine's run events in the spec's order.

For each run: ``response.created`` (then ``response.in_progress``), per output item
``response.output_item.added`` … ``response.output_item.done`` with, for a message,
``content_part.added``, ``output_text.delta``*, ``output_text.annotation.added``* (file
citations), ``output_text.done``, ``content_part.done`` and,
for a function call, ``function_call_arguments.delta``/``.done``, and for the server-side tools
their progress events (``file_search_call.in_progress``/``.searching``/``.completed``;
``code_interpreter_call.in_progress``, ``code_interpreter_call_code.delta``/``.done``,
``code_interpreter_call.interpreting``/``.completed``; ``mcp_list_tools.*``, ``mcp_call.*``);
finally ``response.completed``, ``response.incomplete`` or ``response.failed``. Every event
carries a ``sequence_number`` counted from 0 for each stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rixin.agents.runs import ItemAdded, ItemDone, RunEvent, RunUpdated, RunView, TextDelta

JSONDict = dict[str, Any]
Render = Callable[[RunView], JSONDict]

_TERMINAL_EVENTS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


class ResponseEventStream:
    """Turns run events into Responses stream events for one client stream."""

    def __init__(self, render: Render) -> None:
        self.render = render
        self.sequence = 0
        self.started = False
        self.in_progress = False
        self.finished = False
        self._added: set[int] = set()

    def feed(self, event: RunEvent) -> list[JSONDict]:
        if self.finished:
            return []
        if isinstance(event, RunUpdated):
            return self._updated(event.view)
        if isinstance(event, ItemAdded):
            return self._item_added(event.index, event.item)
        if isinstance(event, TextDelta):
            return [
                self._event(
                    "response.output_text.delta",
                    item_id=event.item_id,
                    output_index=event.index,
                    content_index=0,
                    delta=event.delta,
                    logprobs=[],
                )
            ]
        return self._item_done(event)

    def _event(self, kind: str, **fields: Any) -> JSONDict:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _updated(self, view: RunView) -> list[JSONDict]:
        response = self.render(view)
        status = response["status"]
        out: list[JSONDict] = []
        if not self.started:
            self.started = True
            out.append(self._event("response.created", response=response))
        if status == "in_progress" and not self.in_progress:
            self.in_progress = True
            out.append(self._event("response.in_progress", response=response))
        if status in _TERMINAL_EVENTS or status == "cancelled":
            self.finished = True
            if status in _TERMINAL_EVENTS:
                out.append(self._event(_TERMINAL_EVENTS[status], response=response))
        return out

    def _item_added(self, index: int, item: JSONDict) -> list[JSONDict]:
        self._added.add(index)
        pending = _pending(item)
        out = [self._event("response.output_item.added", output_index=index, item=pending)]
        kind = item.get("type")
        if kind == "message":
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=_text_part(""),
                )
            )
        for name in _STARTED.get(str(kind), ()):
            out.append(self._event(name, item_id=item["id"], output_index=index))
        return out

    def _item_done(self, event: ItemDone) -> list[JSONDict]:
        index, item = event.index, event.item
        out: list[JSONDict] = []
        if index not in self._added:
            out.extend(self._item_added(index, item))
        kind = item.get("type")
        if kind == "message":
            text = "".join(str(p.get("text", "")) for p in item.get("content") or [])
            parts = item.get("content") or []
            notes = list(parts[0].get("annotations") or []) if parts else []
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            for n, note in enumerate(notes):
                out.append(
                    self._event(
                        "response.output_text.annotation.added",
                        **common,
                        annotation_index=n,
                        annotation=note,
                    )
                )
            out.append(self._event("response.output_text.done", **common, text=text, logprobs=[]))
            out.append(
                self._event("response.content_part.done", **common, part=_text_part(text, notes))
            )
        elif kind == "function_call":
            common = {"item_id": item["id"], "output_index": index}
            arguments = str(item.get("arguments", ""))
            out.append(
                self._event("response.function_call_arguments.delta", **common, delta=arguments)
            )
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    **common,
                    name=item.get("name", ""),
                    arguments=arguments,
                )
            )
        else:
            out.extend(self._tool_done(index, item))
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _tool_done(self, index: int, item: JSONDict) -> list[JSONDict]:
        """A server-side tool call's events between its announcement and ``output_item.done``."""
        kind, common = item.get("type"), {"item_id": item["id"], "output_index": index}
        if kind == "file_search_call":
            return [self._event("response.file_search_call.completed", **common)]
        if kind == "code_interpreter_call":
            code = str(item.get("code") or "")
            return [
                self._event("response.code_interpreter_call_code.delta", **common, delta=code),
                self._event("response.code_interpreter_call_code.done", **common, code=code),
                self._event("response.code_interpreter_call.interpreting", **common),
                self._event("response.code_interpreter_call.completed", **common),
            ]
        if kind == "mcp_list_tools":
            ended = "failed" if item.get("error") else "completed"
            return [self._event(f"response.mcp_list_tools.{ended}", **common)]
        if kind == "mcp_call":
            arguments = str(item.get("arguments", ""))
            ended = "failed" if item.get("error") else "completed"
            return [
                self._event("response.mcp_call_arguments.delta", **common, delta=arguments),
                self._event("response.mcp_call_arguments.done", **common, arguments=arguments),
                self._event(f"response.mcp_call.{ended}", **common),
            ]
        return []


_STARTED: dict[str, tuple[str, ...]] = {
    "file_search_call": (
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
    ),
    "code_interpreter_call": ("response.code_interpreter_call.in_progress",),
    "mcp_list_tools": ("response.mcp_list_tools.in_progress",),
    "mcp_call": ("response.mcp_call.in_progress",),
}
"""The events that follow ``output_item.added`` for a server-side tool call."""


def _text_part(text: str, annotations: list[JSONDict] | None = None) -> JSONDict:
    return {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}


def _pending(item: JSONDict) -> JSONDict:
    """The item as first announced: in progress, without content or arguments yet."""
    kind = item.get("type")
    if kind == "message":
        return {**item, "status": "in_progress", "content": []}
    if kind == "function_call":
        return {**item, "status": "in_progress", "arguments": ""}
    if kind == "file_search_call":
        return {**item, "status": "in_progress", "results": None}
    if kind == "code_interpreter_call":
        return {**item, "status": "in_progress", "code": "", "outputs": None}
    if kind == "mcp_call":
        return {**item, "status": "in_progress", "output": None, "error": None}
    return item


def error_event(sequence: int, message: str, code: str | None = "server_error") -> JSONDict:
    """The spec's ``error`` stream event."""
    return {
        "type": "error",
        "sequence_number": sequence,
        "code": code,
        "message": message,
        "param": None,
    }
