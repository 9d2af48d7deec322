"""Assistants v2 runs and run steps, executed by the agent engine (``surface="assistants"``).

An Assistants run is a chain of engine runs, *segments* (``rixin.store.records_assistants``):
the first starts when the run is created; ``submit_tool_outputs`` starts the next one with the
outputs as its input and every earlier segment as its history, which is how the engine
continues after ``requires_action``. Runs created without ``stream`` execute as durable jobs
(they survive a restart: the job resumes the segment from its last checkpoint, or the sweeper
fails it with ``server_error``, D2); streamed runs execute in the request's task and are
cancelled when the client goes away (F5). Run steps are derived from the segments' stored
items, never stored on their own, so none can be duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.agents.engine import RunEngine
from rixin.agents.items import StoredItem, normalize_input
from rixin.agents.runs import ACTIVE, TERMINAL, RunStatus, Sink, load_items, load_runs_items
from rixin.agents.worker import run_worker
from rixin.errors import InvalidRequest, NotFound
from rixin.jobs import JobContext, JobQueue
from rixin.schemas.assistants import (
    CreateRunRequest,
    CreateThreadAndRunRequest,
    RunOptions,
    SubmitToolOutputsRunRequest,
)
from rixin.services.assistants import (
    AssistantsService,
    JSONDict,
    Order,
    Page,
    chat_format,
    code_file_ids,
    engine_tools,
    get_assistant,
    keyset,
    normalize_format,
    normalize_resources,
    normalize_tools,
    vector_store_ids,
)
from rixin.services.models import ModelManager
from rixin.services.responses import RunEventHub
from rixin.services.run_events import AssistantStream, copying_sink
from rixin.services.run_views import (
    EXPIRY_S,
    current_segment,
    function_step,
    get_run,
    render_run,
    run_steps,
)
from rixin.services.threads import (
    ThreadsService,
    add_message,
    copy_outputs,
    create_thread,
    ensure_idle,
    get_thread,
    next_seq,
    prepare_message,
    render_thread,
    thread_history,
)
from rixin.settings import Settings
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records import now_s
from rixin.store.records_agents import AgentRunRecord
from rixin.store.records_assistants import (
    AssistantRecord,
    AssistantRunRecord,
    ThreadMessageRecord,
)

log = logging.getLogger("rixin.assistants")

SURFACE = "assistants"
JOB_KIND = "assistants.run"
CHARS_PER_TOKEN = 4


class _Hooks:
    """A segment's context: the thread's messages before its run, then earlier segments."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items

    async def history(self, session: AsyncSession, run: AgentRunRecord) -> list[StoredItem]:
        info = (run.params or {}).get("assistants") or {}
        prompt = info.get("max_prompt_tokens")
        items = await thread_history(
            session,
            str(info.get("thread_id", "")),
            int(info.get("seq", 0)),
            last_messages=info.get("last_messages"),
            max_chars=prompt * CHARS_PER_TOKEN if isinstance(prompt, int) else None,
            limit=self.max_items,
        )
        previous = [str(segment_id) for segment_id in info.get("previous") or []]
        found = await load_runs_items(session, previous)
        for segment_id in previous:
            inputs, outputs = found[segment_id]
            items += inputs + outputs
        return items

    async def on_settled(
        self,
        session: AsyncSession,
        run: AgentRunRecord,
        inputs: list[StoredItem],
        outputs: list[StoredItem],
    ) -> None:
        await copy_outputs(session, run)


class RunsService:
    def __init__(
        self,
        db: Database,
        engine: RunEngine,
        models: ModelManager,
        jobs: JobQueue,
        settings: Settings,
        threads: ThreadsService,
    ) -> None:
        self.db = db
        self.engine = engine
        self.models = models
        self.jobs = jobs
        self.settings = settings
        self.threads = threads
        self.hub = RunEventHub()
        engine.register_surface(SURFACE, _Hooks(settings.agents.max_history_items))
        self.worker = run_worker(engine, jobs)
        self.worker.add(self)
        self._foreground: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.worker.start()

    async def aclose(self) -> None:
        for task in list(self._foreground):
            task.cancel()
        await self.worker.stop()

    # -- the ``assistants`` flavour of the run worker ----------------------------------------

    job_kind = JOB_KIND

    async def after_sweep(self) -> None:
        """After stale segments were settled: expire stale runs, copy finished output."""
        async with self.db.session(readonly=True) as session:
            ids = list(
                await session.scalars(
                    select(AssistantRunRecord.id).where(AssistantRunRecord.open.is_(True))
                )
            )
        for run_id in ids:
            await self._close(run_id)

    async def _close(self, run_id: str) -> None:
        async with self.db.session() as session:
            run = await session.get(AssistantRunRecord, run_id)
            if run is None or not run.open:
                return
            current = await current_segment(session, run)
            if current is None:
                run.open = False
                return
            if current.status == RunStatus.REQUIRES_ACTION and now_s() > run.created_at + EXPIRY_S:
                current.status = RunStatus.EXPIRED
                current.updated_at = now_s()
            if current.status not in TERMINAL:
                return
            for segment_id in run.segments:
                segment = await session.get(AgentRunRecord, segment_id)
                if segment is not None:
                    await copy_outputs(session, segment)
            run.open = False

    async def run_job(self, ctx: JobContext) -> dict[str, Any] | None:
        segment_id = str(ctx.job.payload["segment_id"])
        await self._execute(segment_id, str(ctx.job.payload["run_id"]), detach=True)
        return {"segment_id": segment_id}

    async def _execute(self, segment_id: str, run_id: str, *, detach: bool) -> None:
        sink: Sink = copying_sink(self.db, segment_id, self.hub.publisher(segment_id))
        try:
            await self.engine.execute(segment_id, sink=sink, detach=detach)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._close(run_id))

    # -- create ------------------------------------------------------------------------------

    async def create(
        self, project_id: str, thread_id: str, body: CreateRunRequest
    ) -> JSONDict | AsyncIterator[bytes]:
        messages = [
            prepare_message(m, f"additional_messages[{i}]")
            for i, m in enumerate(body.additional_messages or [])
        ]
        async with self.db.session(readonly=True) as session:
            thread = await get_thread(session, project_id, thread_id)
            plan = await self._plan(session, project_id, body, thread.tool_resources)
            empty = not messages and not await session.scalar(
                select(ThreadMessageRecord.id).where(ThreadMessageRecord.thread_id == thread_id)
            )
        if empty and not (plan.instructions or body.additional_instructions):
            raise InvalidRequest(
                "The thread has no messages and the run has no instructions: nothing to answer. "
                "Add a message, additional_messages or instructions.",
                param="thread_id",
            )
        if body.additional_instructions:
            extra = body.additional_instructions
            plan.instructions = f"{plan.instructions}\n\n{extra}" if plan.instructions else extra
        await self._check(project_id, plan)
        return await self._launch(project_id, plan, body, thread_id=thread_id, messages=messages)

    async def create_thread_and_run(
        self, project_id: str, body: CreateThreadAndRunRequest
    ) -> JSONDict | AsyncIterator[bytes]:
        spec = body.thread
        messages = [
            prepare_message(m, f"thread.messages[{i}]")
            for i, m in enumerate((spec.messages if spec else None) or [])
        ]
        resources = normalize_resources(
            spec.tool_resources if spec and spec.tool_resources else body.tool_resources
        )
        async with self.db.session(readonly=True) as session:
            plan = await self._plan(session, project_id, body, resources)
        if not messages and not plan.instructions:
            raise InvalidRequest(
                "The thread has no messages and the run has no instructions: nothing to answer.",
                param="thread.messages",
            )
        await self.threads.check_resources(project_id, resources)
        await self._check(project_id, plan)
        return await self._launch(
            project_id,
            plan,
            body,
            thread_id=None,
            messages=messages,
            new_thread=(resources, spec.metadata if spec else None),
        )

    async def _plan(
        self,
        session: AsyncSession,
        project_id: str,
        body: RunOptions,
        thread_resources: JSONDict | None,
    ) -> _Plan:
        assistant = await get_assistant(session, project_id, body.assistant_id)
        model = body.model or assistant.model
        self.models.get(model, "chat")
        fields = body.model_fields_set
        tools = normalize_tools(body.tools) if body.tools is not None else list(assistant.tools)
        stores = vector_store_ids(thread_resources, assistant.tool_resources)
        fmt = (
            normalize_format(body.response_format)
            if "response_format" in fields
            else assistant.response_format or "auto"
        )
        instructions = (
            body.instructions if body.instructions is not None else assistant.instructions
        )
        return _Plan(
            assistant=assistant,
            model=model,
            instructions=instructions or "",
            tools=tools,
            specs=engine_tools(
                tools, stores, code_file_ids(thread_resources, assistant.tool_resources)
            ),
            response_format=fmt,
        )

    async def _check(self, project_id: str, plan: _Plan) -> None:
        ctx = self.engine.build_context(project_id, "check")
        toolset = await self.engine.registry.build(plan.specs, ctx)
        plan.names = set(toolset.tools)

    async def _launch(
        self,
        project_id: str,
        plan: _Plan,
        body: RunOptions,
        *,
        thread_id: str | None,
        messages: list[JSONDict],
        new_thread: tuple[JSONDict, dict[str, str] | None] | None = None,
    ) -> JSONDict | AsyncIterator[bytes]:
        stream = bool(body.stream)
        run_id, segment_id = new_id("run"), new_id("rseg")
        choice = _chat_tool_choice(body.tool_choice, plan.names)
        queue = self.hub.subscribe(segment_id) if stream else None
        thread_body: JSONDict | None = None
        try:
            async with self.db.session() as session:
                if new_thread is not None:
                    thread = await create_thread(session, project_id, *new_thread)
                    thread_body = render_thread(thread)
                else:
                    assert thread_id is not None
                    thread = await get_thread(session, project_id, thread_id)
                    await ensure_idle(session, thread)
                for message in messages:
                    await add_message(session, thread, message)
                run = AssistantRunRecord(
                    id=run_id,
                    project_id=project_id,
                    thread_id=thread.id,
                    assistant_id=plan.assistant.id,
                    seq=next_seq(thread),
                    segments=[segment_id],
                    params=_run_params(plan, body),
                    metadata_=body.metadata or {},
                    open=True,
                    created_at=now_s(),
                )
                session.add(run)
                info = {
                    "thread_id": thread.id,
                    "run_id": run_id,
                    "assistant_id": plan.assistant.id,
                    "seq": run.seq,
                    "segment": 0,
                    "previous": [],
                    "last_messages": _last_messages(body),
                    "max_prompt_tokens": body.max_prompt_tokens,
                }
                params = _engine_params(plan, body, choice, info)
                await self._add_segment(session, project_id, run, segment_id, params, [], stream)
                first = await render_run(session, run)
        except BaseException:
            if queue is not None:
                self.hub.unsubscribe(segment_id, queue)
            raise
        if queue is None:
            return first
        return self._stream(project_id, run_id, segment_id, queue, thread_body, None)

    async def _add_segment(
        self,
        session: AsyncSession,
        project_id: str,
        run: AssistantRunRecord,
        segment_id: str,
        params: JSONDict,
        inputs: list[StoredItem],
        stream: bool,
        previous: str | None = None,
    ) -> None:
        segment = await self.engine.create_run(
            session,
            project_id=project_id,
            surface=SURFACE,
            model=str(run.params["model"]),
            params=params,
            inputs=inputs,
            background=not stream,
            previous_run_id=previous,
            run_id=segment_id,
        )
        if stream:
            segment.lease_expires_at = None  # set again when the executor begins
            return
        job = await self.jobs.enqueue(
            project_id,
            JOB_KIND,
            {"segment_id": segment_id, "run_id": run.id},
            idempotency_key=segment_id,
            max_attempts=self.settings.agents.job_attempts,
            session=session,
        )
        segment.job_id = job.id

    def _stream(
        self,
        project_id: str,
        run_id: str,
        segment_id: str,
        queue: asyncio.Queue[object],
        thread: JSONDict | None,
        submitted: JSONDict | None,
    ) -> AsyncIterator[bytes]:
        task = asyncio.create_task(
            self._execute(segment_id, run_id, detach=False), name=f"rixin-run-{run_id}"
        )
        self._foreground.add(task)
        task.add_done_callback(self._foreground.discard)

        async def render() -> JSONDict:
            return await self.retrieve(project_id, "", run_id, any_thread=True)

        async def unsubscribe() -> None:
            self.hub.unsubscribe(segment_id, queue)

        events = AssistantStream(render, queue, task, unsubscribe)
        return events.run(thread=thread, submitted=submitted)

    # -- reads and changes ----------------------------------------------------------------------

    async def retrieve(
        self, project_id: str, thread_id: str, run_id: str, *, any_thread: bool = False
    ) -> JSONDict:
        async with self.db.session(readonly=True) as session:
            run = await get_run(session, project_id, thread_id, run_id, any_thread=any_thread)
            return await render_run(session, run)

    async def list(
        self,
        project_id: str,
        thread_id: str,
        *,
        limit: int = 20,
        order: Order = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> Page:
        async with self.db.session(readonly=True) as session:
            thread = await get_thread(session, project_id, thread_id)
            anchors: list[tuple[Any, ...] | None] = []
            for cursor in (after, before):
                if cursor is None:
                    anchors.append(None)
                    continue
                anchor = await get_run(session, project_id, thread.id, cursor, param="after")
                anchors.append((anchor.seq,))
            rows, has_more = await keyset(
                session,
                select(AssistantRunRecord).where(AssistantRunRecord.thread_id == thread.id),
                [AssistantRunRecord.seq],
                limit=limit,
                order=order,
                after=anchors[0],
                before=anchors[1],
            )
            return Page([await render_run(session, r) for r in rows], has_more)

    async def modify(
        self, project_id: str, thread_id: str, run_id: str, metadata: dict[str, str] | None
    ) -> JSONDict:
        async with self.db.session() as session:
            run = await get_run(session, project_id, thread_id, run_id)
            run.metadata_ = metadata or {}
            return await render_run(session, run)

    async def cancel(self, project_id: str, thread_id: str, run_id: str) -> JSONDict:
        async with self.db.session() as session:
            run = await get_run(session, project_id, thread_id, run_id)
            segment = await current_segment(session, run)
            status = segment.status if segment is not None else RunStatus.FAILED
            if segment is None or status not in (*ACTIVE, RunStatus.REQUIRES_ACTION):
                raise InvalidRequest(f"Cannot cancel run with status '{status}'.", param="run_id")
            if status == RunStatus.REQUIRES_ACTION:
                segment.status = RunStatus.CANCELLED
                segment.updated_at = now_s()
            else:
                await self.engine.request_cancel(session, segment)
            await session.flush()
            return await render_run(session, run)

    async def submit_tool_outputs(
        self, project_id: str, thread_id: str, run_id: str, body: SubmitToolOutputsRunRequest
    ) -> JSONDict | AsyncIterator[bytes]:
        stream = bool(body.stream)
        segment_id = new_id("rseg")
        queue = self.hub.subscribe(segment_id) if stream else None
        try:
            async with self.db.session() as session:
                run = await get_run(session, project_id, thread_id, run_id)
                current = await current_segment(session, run)
                if current is None or current.status != RunStatus.REQUIRES_ACTION:
                    status = current.status if current is not None else "failed"
                    raise InvalidRequest(
                        f"Runs in status '{status}' do not accept tool outputs.", param="run_id"
                    )
                inputs = await _tool_outputs(session, current, body)
                params = _continue_params(current)
                await self._add_segment(
                    session, project_id, run, segment_id, params, inputs, stream, current.id
                )
                run.segments = [*run.segments, segment_id]
                submitted = await function_step(session, run)
                first = await render_run(session, run)
        except BaseException:
            if queue is not None:
                self.hub.unsubscribe(segment_id, queue)
            raise
        if queue is None:
            return first
        return self._stream(project_id, run_id, segment_id, queue, None, submitted)

    # -- steps ---------------------------------------------------------------------------------

    async def list_steps(
        self,
        project_id: str,
        thread_id: str,
        run_id: str,
        *,
        limit: int = 20,
        order: Order = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> Page:
        async with self.db.session(readonly=True) as session:
            run = await get_run(session, project_id, thread_id, run_id)
            steps = await run_steps(session, run)
        if order == "desc":
            steps.reverse()
        ids = [s["id"] for s in steps]
        start, end = 0, len(steps)
        for cursor, param in ((after, "after"), (before, "before")):
            if cursor is not None and cursor not in ids:
                raise NotFound(f"No run step found with id '{cursor[:64]}'.", param=param)
        if after is not None:
            start = ids.index(after) + 1
        if before is not None:
            end = ids.index(before)
            if after is None:
                start = max(start, end - limit)
        window = steps[start:end]
        return Page(
            window[:limit], has_more=len(window) > limit or (before is not None and start > 0)
        )

    async def retrieve_step(
        self, project_id: str, thread_id: str, run_id: str, step_id: str
    ) -> JSONDict:
        async with self.db.session(readonly=True) as session:
            run = await get_run(session, project_id, thread_id, run_id)
            steps = await run_steps(session, run)
        for step in steps:
            if step["id"] == step_id:
                return step
        raise NotFound(f"No run step found with id '{step_id[:64]}'.", param="step_id")


# -- plans and parameters ---------------------------------------------------------------------


class _Plan:
    def __init__(
        self,
        *,
        assistant: AssistantRecord,
        model: str,
        instructions: str,
        tools: list[JSONDict],
        specs: list[JSONDict],
        response_format: Any,
    ) -> None:
        self.assistant = assistant
        self.model = model
        self.instructions = instructions
        self.tools = tools
        self.specs = specs
        self.response_format = response_format
        self.names: set[str] = set()


def _last_messages(body: RunOptions) -> int | None:
    strategy = body.truncation_strategy
    if strategy is not None and strategy.type == "last_messages":
        return strategy.last_messages or 1
    return None


def _run_params(plan: _Plan, body: RunOptions) -> JSONDict:
    """What the run object shows (OpenAI's field names)."""
    strategy = body.truncation_strategy
    return {
        "model": plan.model,
        "instructions": plan.instructions,
        "tools": plan.tools,
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "response_format": plan.response_format,
        "temperature": body.temperature
        if body.temperature is not None
        else plan.assistant.temperature,
        "top_p": body.top_p if body.top_p is not None else plan.assistant.top_p,
        "max_prompt_tokens": body.max_prompt_tokens,
        "max_completion_tokens": body.max_completion_tokens,
        "truncation_strategy": strategy.known() if strategy is not None else None,
    }


def _engine_params(plan: _Plan, body: RunOptions, choice: Any, info: JSONDict) -> JSONDict:
    """What the engine reads (Responses-style names) plus this surface's own ``assistants``."""
    shown = _run_params(plan, body)
    return {
        "instructions": plan.instructions or None,
        "tools": plan.specs,
        "tool_choice": choice,
        "parallel_tool_calls": body.parallel_tool_calls,
        "max_output_tokens": body.max_completion_tokens,
        "temperature": shown["temperature"],
        "top_p": shown["top_p"],
        "truncation": "disabled",
        "response_format": chat_format(plan.response_format),
        "assistants": info,
    }


def _continue_params(current: AgentRunRecord) -> JSONDict:
    params = dict(current.params)
    info = dict(params["assistants"])
    info["segment"] = int(info["segment"]) + 1
    info["previous"] = [*info.get("previous", []), current.id]
    params["assistants"] = info
    if params.get("tool_choice") not in (None, "auto", "none"):
        params["tool_choice"] = "auto"  # a required call was made; the model may now answer
    return params


def _chat_tool_choice(choice: str | JSONDict | None, names: set[str]) -> Any:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequest("tool_choice must be none, auto or required.", param="tool_choice")
        return choice
    kind = choice.get("type")
    function = choice.get("function") or {}
    name = function.get("name") if kind == "function" else kind
    if not isinstance(name, str) or name not in names:
        raise InvalidRequest(
            "tool_choice names a tool that is not among the run's tools.", param="tool_choice"
        )
    return {"type": "function", "function": {"name": name}}


async def _tool_outputs(
    session: AsyncSession, current: AgentRunRecord, body: SubmitToolOutputsRunRequest
) -> list[StoredItem]:
    pending = [
        str(item.data["call_id"])
        for item in await load_items(session, current.id, "output")
        if item.type == "function_call"
    ]
    given: dict[str, str] = {}
    for i, output in enumerate(body.tool_outputs):
        if output.tool_call_id not in pending:
            raise InvalidRequest(
                f"No tool call with id '{str(output.tool_call_id)[:64]}' is awaiting output.",
                param=f"tool_outputs[{i}].tool_call_id",
            )
        given[output.tool_call_id] = output.output or ""
    missing = [call_id for call_id in pending if call_id not in given]
    if missing:
        raise InvalidRequest(
            f"Expected tool outputs for call ids {', '.join(missing)}.", param="tool_outputs"
        )
    return normalize_input(
        [{"type": "function_call_output", "call_id": c, "output": given[c]} for c in pending],
        "tool_outputs",
    )


# -- rendering --------------------------------------------------------------------------------


def build_assistants_services(
    settings: Settings, db: Database, engine: RunEngine, models: ModelManager, jobs: JobQueue
) -> tuple[AssistantsService, ThreadsService, RunsService]:
    """The Assistants v2 services on the one agent engine (shared with the Responses API)."""
    assistants = AssistantsService(db, engine, models)

    async def check_resources(project_id: str, resources: JSONDict) -> None:
        await assistants.check_tools(project_id, [], resources)

    threads = ThreadsService(db, check_resources)
    return assistants, threads, RunsService(db, engine, models, jobs, settings, threads)
