"""Assistants run objects and run steps, rendered from a run's engine segments.

The run's status, ``required_action``, ``last_error`` and usage come from its segments (the
current one decides the status); its steps from the segments' stored items: each assistant
message is a ``message_creation`` step, each server-side tool call a ``tool_calls`` step, and
the function calls of one model step share one ``tool_calls`` step, completed once their
outputs were submitted (they are the next segment's input).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.agents.limits import run_incomplete
from rixin.agents.runs import ACTIVE, TERMINAL, RunStatus, load_items
from rixin.errors import NotFound
from rixin.services.assistants import JSONDict
from rixin.services.run_events import finish_step, message_step, tool_call_detail, tool_step
from rixin.services.threads import get_thread
from rixin.store.records import now_s
from rixin.store.records_agents import AgentItemRecord, AgentRunRecord
from rixin.store.records_assistants import AssistantRunRecord

EXPIRY_S = 600
"""A run waiting for tool outputs expires after ten minutes, as on OpenAI."""
_RUN_ERRORS = {"server_error", "rate_limit_exceeded", "invalid_prompt"}


async def get_run(
    session: AsyncSession,
    project_id: str,
    thread_id: str,
    run_id: str,
    *,
    param: str = "run_id",
    any_thread: bool = False,
) -> AssistantRunRecord:
    if not any_thread:
        await get_thread(session, project_id, thread_id)
    run = await session.get(AssistantRunRecord, run_id) if len(run_id) <= 64 else None
    if (
        run is None
        or run.project_id != project_id
        or (not any_thread and run.thread_id != thread_id)
    ):
        raise NotFound(f"No run found with id '{run_id[:64]}'.", param=param)
    return run


async def current_segment(session: AsyncSession, run: AssistantRunRecord) -> AgentRunRecord | None:
    if not run.segments:
        return None
    return await session.get(AgentRunRecord, run.segments[-1])


async def render_run(session: AsyncSession, run: AssistantRunRecord) -> JSONDict:
    segments = [s for s in [await session.get(AgentRunRecord, i) for i in run.segments] if s]
    current = segments[-1] if segments else None
    status = str(current.status) if current is not None else RunStatus.FAILED
    params = run.params
    required = None
    if current is not None and status == RunStatus.REQUIRES_ACTION:
        calls = [
            {
                "id": item.data["call_id"],
                "type": "function",
                "function": {"name": item.data["name"], "arguments": item.data["arguments"]},
            }
            for item in await load_items(session, current.id, "output")
            if item.type == "function_call"
        ]
        required = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}
    ended = current.updated_at if current is not None else run.created_at
    return {
        "id": run.id,
        "object": "thread.run",
        "created_at": run.created_at,
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id,
        "status": status,
        "required_action": required,
        "last_error": _last_error(current) if status == RunStatus.FAILED else None,
        "expires_at": run.created_at + EXPIRY_S
        if status in (*ACTIVE, RunStatus.REQUIRES_ACTION)
        else None,
        "started_at": segments[0].created_at if status != RunStatus.QUEUED and segments else None,
        "cancelled_at": ended if status == RunStatus.CANCELLED else None,
        "failed_at": ended if status == RunStatus.FAILED else None,
        "completed_at": ended if status == RunStatus.COMPLETED else None,
        "incomplete_details": run_incomplete(current.incomplete_details if current else None)
        if status == RunStatus.INCOMPLETE
        else None,
        "model": params["model"],
        "instructions": params.get("instructions") or "",
        "tools": params.get("tools") or [],
        "metadata": dict(run.metadata_ or {}),
        "usage": _usage(segments) if status in TERMINAL else None,
        "temperature": params.get("temperature") if params.get("temperature") is not None else 1.0,
        "top_p": params.get("top_p") if params.get("top_p") is not None else 1.0,
        "max_prompt_tokens": params.get("max_prompt_tokens"),
        "max_completion_tokens": params.get("max_completion_tokens"),
        "truncation_strategy": params.get("truncation_strategy")
        or {"type": "auto", "last_messages": None},
        "tool_choice": params.get("tool_choice") or "auto",
        "parallel_tool_calls": bool(params.get("parallel_tool_calls", True)),
        "response_format": params.get("response_format") or "auto",
    }


def _last_error(segment: AgentRunRecord | None) -> JSONDict:
    error = (segment.error if segment is not None else None) or {}
    code = error.get("code")
    return {
        "code": code if code in _RUN_ERRORS else "server_error",
        "message": str(error.get("message") or "The run failed."),
    }


def _usage(segments: list[AgentRunRecord]) -> JSONDict | None:
    if not any(s.usage for s in segments):
        return None
    prompt = sum(int((s.usage or {}).get("input_tokens", 0)) for s in segments)
    completion = sum(int((s.usage or {}).get("output_tokens", 0)) for s in segments)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# -- steps --------------------------------------------------------------------------------------


async def run_steps(session: AsyncSession, run: AssistantRunRecord) -> list[JSONDict]:
    """The run's steps, oldest first, from its segments' stored items."""
    segments = [s for s in [await session.get(AgentRunRecord, i) for i in run.segments] if s]
    rows = list(
        await session.scalars(
            select(AgentItemRecord)
            .where(AgentItemRecord.run_id.in_([s.id for s in segments]))
            .order_by(AgentItemRecord.created_at, AgentItemRecord.position)
        )
    )
    by_segment: dict[str, list[AgentItemRecord]] = {s.id: [] for s in segments}
    outputs: dict[str, tuple[str, int]] = {}
    for row in rows:
        if row.phase == "input" and row.type == "function_call_output":
            outputs[str(row.data["call_id"])] = (str(row.data.get("output", "")), row.created_at)
        elif row.phase == "output":
            by_segment[row.run_id].append(row)
    current = segments[-1] if segments else None
    owner = {"id": run.id, "thread_id": run.thread_id, "assistant_id": run.assistant_id}
    steps: list[JSONDict] = []
    for segment in segments:
        items = sorted(by_segment[segment.id], key=lambda r: r.position)
        pending: list[AgentItemRecord] = []
        for row in items:
            if row.type == "function_call":
                pending.append(row)
                continue
            steps += _function_steps(owner, pending, outputs, segment, current)
            pending = []
            if row.type == "message":
                step = message_step(owner, row.id, row.created_at)
                steps.append(finish_step(step, "completed", row.created_at))
            elif row.type in ("file_search_call", "code_interpreter_call", "mcp_call"):
                detail = tool_call_detail(row.data, (row.call or {}).get("output"))
                step = tool_step(owner, row.id, row.created_at, [detail])
                steps.append(finish_step(step, "completed", row.created_at))
        steps += _function_steps(owner, pending, outputs, segment, current)
    return steps


def _function_steps(
    owner: JSONDict,
    calls: list[AgentItemRecord],
    outputs: dict[str, tuple[str, int]],
    segment: AgentRunRecord,
    current: AgentRunRecord | None,
) -> list[JSONDict]:
    if not calls:
        return []
    details = []
    done_at = None
    for row in calls:
        answer = outputs.get(str(row.data["call_id"]))
        details.append(tool_call_detail(row.data, answer[0] if answer else None))
        done_at = answer[1] if answer else None
    step = tool_step(owner, calls[0].id, calls[0].created_at, details)
    if all(outputs.get(str(r.data["call_id"])) for r in calls):
        return [finish_step(step, "completed", done_at)]
    status = str(current.status) if current is not None else "failed"
    if segment is current and status == RunStatus.REQUIRES_ACTION:
        return [step]
    final = {"cancelled": "cancelled", "expired": "expired", "failed": "failed"}.get(status)
    ended = current.updated_at if current is not None else now_s()
    return [finish_step(step, final or "cancelled", ended)]


async def function_step(session: AsyncSession, run: AssistantRunRecord) -> JSONDict | None:
    """The function-call step the submitted outputs complete (for ``step.completed``)."""
    await session.flush()
    found = None
    for step in await run_steps(session, run):
        calls = step["step_details"].get("tool_calls") or []
        if any(call["type"] == "function" for call in calls):
            found = step
    return found
