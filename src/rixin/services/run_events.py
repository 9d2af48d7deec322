"""Assistants run steps and stream events, rendered from the engine's items and run events.

A stream is ``thread.created`` (create-and-run only), ``thread.run.created``,
``thread.run.queued``, ``thread.run.in_progress``; per message ``thread.run.step.created``,
``thread.run.step.in_progress``, ``thread.message.created``, ``thread.message.in_progress``,
``thread.message.delta``*, ``thread.message.completed``, ``thread.run.step.completed``; per
server-side tool call ``thread.run.step.created`` and ``.in_progress`` (no tool calls yet),
``thread.run.step.delta`` with the call (code, outputs) and ``thread.run.step.completed``; then
``thread.run.requires_action`` (after the function-call step's ``created``, ``in_progress`` and
a ``delta`` with the calls, the step still in progress) or ``thread.run.completed`` /
``failed`` / ``cancelled`` / ``incomplete`` / ``expired``, and finally ``done`` with
``data: [DONE]``. A step's id is derived from its first item's (random) id, so a stream and
``steps.list`` agree.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from rixin.agents.runs import ItemAdded, ItemDone, RunEvent, RunUpdated, Sink, TextDelta
from rixin.errors import RixinError
from rixin.services.responses import _OVERFLOW, SandboxRunner
from rixin.services.threads import assistant_content, copy_outputs
from rixin.store.db import Database
from rixin.store.records import now_s
from rixin.store.records_agents import AgentRunRecord

log = logging.getLogger("rixin.assistants")

JSONDict = dict[str, Any]
SETTLED = ("requires_action", "completed", "failed", "cancelled", "incomplete", "expired")
SERVER_TOOL_ITEMS = ("file_search_call", "code_interpreter_call", "mcp_call")
DONE = b"event: done\ndata: [DONE]\n\n"


# -- steps ------------------------------------------------------------------------------------


def step_id(item_id: str) -> str:
    return "step_" + item_id.split("_", 1)[-1]


def base_step(owner: JSONDict, item_id: str, kind: str, created_at: int) -> JSONDict:
    """A step of ``owner`` (``{"id", "thread_id", "assistant_id"}`` of its run), in progress."""
    return {
        "id": step_id(item_id),
        "object": "thread.run.step",
        "created_at": created_at,
        "assistant_id": owner["assistant_id"],
        "thread_id": owner["thread_id"],
        "run_id": owner["id"],
        "type": kind,
        "status": "in_progress",
        "step_details": {},
        "last_error": None,
        "expired_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "metadata": {},
        "usage": None,
    }


def message_step(owner: JSONDict, item_id: str, created_at: int) -> JSONDict:
    step = base_step(owner, item_id, "message_creation", created_at)
    step["step_details"] = {"type": "message_creation", "message_creation": {"message_id": item_id}}
    return step


def tool_step(owner: JSONDict, item_id: str, created_at: int, details: list[JSONDict]) -> JSONDict:
    step = base_step(owner, item_id, "tool_calls", created_at)
    step["step_details"] = {"type": "tool_calls", "tool_calls": details}
    return step


_ENDED_AT = {
    "completed": "completed_at",
    "cancelled": "cancelled_at",
    "failed": "failed_at",
    "expired": "expired_at",
}


def finish_step(step: JSONDict, status: str, at: int | None) -> JSONDict:
    step["status"] = status
    if status in _ENDED_AT:
        step[_ENDED_AT[status]] = at
    if status == "failed":
        step["last_error"] = {"code": "server_error", "message": "The run failed."}
    return step


def step_delta(step_id_: str, details: list[JSONDict]) -> JSONDict:
    """A ``thread.run.step.delta`` adding ``details`` (the client accumulates them by index)."""
    calls = []
    for index, detail in enumerate(details):
        call = {"index": index, **detail}
        code = call.get("code_interpreter")
        if code is not None:
            outputs = [{"index": i, **o} for i, o in enumerate(code.get("outputs") or [])]
            call["code_interpreter"] = {**code, "outputs": outputs}
        calls.append(call)
    return {
        "id": step_id_,
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": calls}},
    }


def tool_call_detail(data: JSONDict, output: str | None) -> JSONDict:
    """A ``tool_calls`` entry for an engine item (function, file_search, code_interpreter)."""
    kind = data.get("type")
    if kind == "file_search_call":
        return {"id": data["id"], "type": "file_search", "file_search": {}}
    if kind == "code_interpreter_call":
        logs = [o for o in data.get("outputs") or [] if o.get("type") == "logs"]
        outputs: list[JSONDict] = [{"type": "logs", "logs": str(o.get("logs", ""))} for o in logs]
        outputs += [{"type": "image", "image": {"file_id": i}} for i in image_file_ids(data)]
        return {
            "id": data["id"],
            "type": "code_interpreter",
            "code_interpreter": {"input": str(data.get("code") or ""), "outputs": outputs},
        }
    return {
        "id": data.get("call_id") or data["id"],
        "type": "function",
        "function": {
            "name": str(data.get("name", "")),
            "arguments": str(data.get("arguments", "")),
            "output": output,
        },
    }


def image_file_ids(data: JSONDict) -> list[str]:
    """The ids of the images a ``code_interpreter_call`` item produced (its ``files``)."""
    return [
        str(f["file_id"])
        for f in data.get("files") or []
        if isinstance(f, dict)
        and f.get("file_id")
        and f.get("mime_type") in SandboxRunner.IMAGE_TYPES
    ]


# -- messages -----------------------------------------------------------------------------------


def stream_message(owner: JSONDict, item: JSONDict, status: str) -> JSONDict:
    now = now_s()
    return {
        "id": item["id"],
        "object": "thread.message",
        "created_at": now,
        "thread_id": owner["thread_id"],
        "status": status,
        "incomplete_details": {"reason": "max_tokens"} if status == "incomplete" else None,
        "completed_at": now if status == "completed" else None,
        "incomplete_at": now if status == "incomplete" else None,
        "role": "assistant",
        "content": [] if status == "in_progress" else assistant_content(item),
        "assistant_id": owner["assistant_id"],
        "run_id": owner["id"],
        "attachments": [],
        "metadata": {},
    }


def copying_sink(db: Database, segment_id: str, publish: Sink) -> Sink:
    """Publish run events; copy each stored assistant message into the thread at once."""

    async def sink(event: RunEvent) -> None:
        # A message stored by the transaction that settled the run was copied there already.
        if (
            isinstance(event, ItemDone)
            and event.item.get("type") == "message"
            and not event.settled
        ):
            try:
                async with db.session() as session:
                    segment = await session.get(AgentRunRecord, segment_id)
                    if segment is not None:
                        await copy_outputs(session, segment)
            except Exception:  # the settle transaction or the sweeper copies it later
                log.warning("run segment %s: copying a message failed; retried later", segment_id)
        await publish(event)

    return sink


# -- the stream ---------------------------------------------------------------------------------


def sse(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class AssistantStream:
    """Turns one segment's run events into Assistants stream events for one client."""

    def __init__(
        self,
        render: Callable[[], Awaitable[JSONDict]],
        queue: asyncio.Queue[object],
        task: asyncio.Task[None],
        unsubscribe: Callable[[], Awaitable[None]],
    ) -> None:
        self.render = render
        self.queue = queue
        self.task = task
        self.unsubscribe = unsubscribe
        self.owner: JSONDict = {}
        self.in_progress = False
        self.finished = False
        self.opened: set[str] = set()
        self.calls: list[JSONDict] = []

    async def run(
        self, *, thread: JSONDict | None, submitted: JSONDict | None
    ) -> AsyncIterator[bytes]:
        try:
            if thread is not None:
                yield sse("thread.created", thread)
            run = await self.render()
            self.owner = {k: run[k] for k in ("id", "thread_id", "assistant_id")}
            if submitted is None:
                yield sse("thread.run.created", run)
            else:
                yield sse("thread.run.step.completed", submitted)
            yield sse("thread.run.queued", run)
            while not self.finished:
                try:
                    event = await asyncio.wait_for(self.queue.get(), timeout=1.0)
                except TimeoutError:
                    run = await self.render()
                    if run["status"] in SETTLED and self.task.done():
                        for name, data in self._flush_calls(run["status"]):
                            yield sse(name, data)
                        yield sse(f"thread.run.{run['status']}", run)
                        break
                    continue
                if event is _OVERFLOW:
                    yield sse("error", _error("The stream fell too far behind and was closed."))
                    break
                if isinstance(event, RunUpdated | ItemAdded | ItemDone | TextDelta):
                    for name, data in await self.feed(event):
                        yield sse(name, data)
            yield DONE
        except RixinError as exc:
            yield sse("error", _error(exc.message, exc.code))
            yield DONE
        finally:
            await self.unsubscribe()
            if not self.task.done():
                self.task.cancel()  # the client went away: stop generating (F5)

    async def feed(self, event: RunEvent) -> list[tuple[str, Any]]:
        if isinstance(event, RunUpdated):
            return await self._updated(str(event.view.status))
        if isinstance(event, TextDelta):
            delta = {
                "content": [
                    {"index": 0, "type": "text", "text": {"value": event.delta, "annotations": []}}
                ]
            }
            return [
                (
                    "thread.message.delta",
                    {"id": event.item_id, "object": "thread.message.delta", "delta": delta},
                )
            ]
        if isinstance(event, ItemAdded):
            return self._added(event.item)
        return self._done(event.item)

    async def _updated(self, status: str) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if status == "in_progress" and not self.in_progress:
            self.in_progress = True
            out.append(("thread.run.in_progress", await self.render()))
        elif status == "cancelling":
            out.append(("thread.run.cancelling", await self.render()))
        elif status in SETTLED:
            self.finished = True
            out += self._flush_calls(status)
            out.append((f"thread.run.{status}", await self.render()))
        return out

    def _added(self, item: JSONDict) -> list[tuple[str, Any]]:
        kind = item.get("type")
        item_id = str(item.get("id"))
        if item_id in self.opened:
            return []
        self.opened.add(item_id)
        now = now_s()
        if kind == "message":
            step = message_step(self.owner, item_id, now)
            message = stream_message(self.owner, item, "in_progress")
            return [
                ("thread.run.step.created", step),
                ("thread.run.step.in_progress", step),
                ("thread.message.created", message),
                ("thread.message.in_progress", message),
            ]
        if kind in SERVER_TOOL_ITEMS:
            # announced empty: the official client accumulates the ``step.delta`` into it
            step = tool_step(self.owner, item_id, now, [])
            return [("thread.run.step.created", step), ("thread.run.step.in_progress", step)]
        return []

    def _done(self, item: JSONDict) -> list[tuple[str, Any]]:
        kind = item.get("type")
        if kind == "function_call":
            self.calls.append(item)
            return []
        out = self._added(item)
        now = now_s()
        if kind == "message":
            status = "incomplete" if item.get("status") == "incomplete" else "completed"
            message = stream_message(self.owner, item, status)
            step = finish_step(message_step(self.owner, str(item["id"]), now), "completed", now)
            event = (
                "thread.message.incomplete"
                if status == "incomplete"
                else "thread.message.completed"
            )
            out += [(event, message), ("thread.run.step.completed", step)]
        elif kind in SERVER_TOOL_ITEMS:
            output = str(item.get("output")) if item.get("output") is not None else None
            details = [tool_call_detail(item, output)]
            step = tool_step(self.owner, str(item["id"]), now, details)
            out.append(("thread.run.step.delta", step_delta(step["id"], details)))
            out.append(("thread.run.step.completed", finish_step(step, "completed", now)))
        return out

    def _flush_calls(self, status: str) -> list[tuple[str, Any]]:
        """The function-call step: announced when the run stops for its outputs."""
        if not self.calls or status != "requires_action":
            return []
        details = [tool_call_detail(c, None) for c in self.calls]
        step = tool_step(self.owner, str(self.calls[0]["id"]), now_s(), [])
        self.calls = []
        return [
            ("thread.run.step.created", step),
            ("thread.run.step.in_progress", step),
            ("thread.run.step.delta", step_delta(step["id"], details)),
        ]


def _error(message: str, code: str | None = "server_error") -> JSONDict:
    return {"code": code, "message": message, "param": None, "type": "server_error"}
