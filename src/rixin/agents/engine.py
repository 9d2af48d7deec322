"""The run engine: a state machine persisted at every step.

::

    queued ──▶ in_progress ──▶ completed | incomplete | failed
                  │   ▲  └──▶ requires_action (client tools, approvals) ──▶ (a new run continues)
                  │   └── tool calls (server-side), then the next model step
                  └──▶ cancelling ──▶ cancelled

One ``execute(run_id)`` drives a run until it settles. Every step is one transaction: the run's
row (counters, usage, lease renewal and, when the step ends the run, its final status), the
model's message and the calls it decided (into the tool-call ledger as ``planned``, with the ids
their output items will have), and the surface's ``on_settled`` hook. A server-side call is
marked ``started`` in its own transaction *before* it runs and ``succeeded``/``failed`` together
with its output item. A run resumed after a crash therefore never repeats a model step whose
outcome was recorded, never duplicates an item (``(run_id, phase, position)`` is unique), and
never runs a side-effecting call that may already have run: it fails instead (RELIABILITY D2,
D4).

The executor holds a lease on the run (``lease_owner``/``lease_expires_at``), renewed by a
heartbeat that also notices a requested cancellation. Every write updates the run's row with
``WHERE lease_owner = <this executor>`` first and stops (``LeaseLost``, rolled back) unless that
matched, so a stale executor that lost the lease cannot write. While it holds the lease the
executor is the run's only writer, so it keeps what it wrote in memory (``RunState``) and reads
the run only when it takes it over (``_begin``). ``start_run`` creates a run already leased to
the caller, for runs executed at once. ``sweep()`` settles runs whose executor vanished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.agents import items as itemlib
from rixin.agents.items import StoredItem
from rixin.agents.runs import (
    ACTIVE,
    ItemAdded,
    ItemDone,
    NoHooks,
    RunHooks,
    RunStatus,
    RunUpdated,
    RunView,
    Sink,
    TextDelta,
    load_run_items,
    load_view,
    no_sink,
    view_of,
)
from rixin.agents.steps import ModelStep, StepRequest, StepResult
from rixin.agents.tools.base import BuildContext, Tool, ToolCall, ToolContext, ToolOutput
from rixin.agents.tools.registry import ToolRegistry, Toolset
from rixin.errors import RixinError
from rixin.settings import AgentSettings
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records import now_s
from rixin.store.records_agents import AgentItemRecord, AgentRunRecord, ToolCallRecord

if TYPE_CHECKING:
    from rixin.agents.worker import RunWorker

log = logging.getLogger("rixin.agents")

JSONDict = dict[str, Any]
BuildContextFactory = Callable[[str, str], BuildContext]
"""``(project_id, run_id) -> BuildContext`` for the run's tools."""


class LeaseLost(Exception):
    """Another executor owns the run now (or it was deleted): stop without writing."""


class SideEffectInDoubt(RixinError):
    code = "server_error"


def error_body(exc: BaseException) -> JSONDict:
    """The run's ``error`` for an exception (internal ``status`` kept for the API surface)."""
    if isinstance(exc, RixinError):
        status = exc.status_code
        if status == 429:
            code = "rate_limit_exceeded"
        elif 400 <= status < 500 and status != 408:
            code = "invalid_prompt"
        else:
            code = "server_error"
        return {"code": code, "message": exc.message, "status": status, "param": exc.param}
    return {"code": "server_error", "message": "The server failed while generating the response."}


@dataclass
class RunState:
    """An executor's hold on a run: the run as it last wrote it, its items, its open calls."""

    run: AgentRunRecord
    owner: str
    inputs: list[StoredItem]
    history: list[StoredItem]
    output: list[StoredItem]
    pending: list[ToolCallRecord] = field(default_factory=list)
    """Server-side calls planned or started but not finished, in ledger order."""
    ledger: int = 0
    """Rows in the run's tool-call ledger: the next call's position."""
    toolset: Toolset = field(default_factory=Toolset)
    tools_built: bool = False
    """``toolset`` holds the run's tools (else execution builds them first)."""
    cancel_requested: bool = False
    lost: bool = False
    settled: RunView | None = None
    """The run as this executor settled it."""


@dataclass
class _Streaming:
    """The message item being streamed by the current model step."""

    index: int
    item_id: str | None = None


class RunEngine:
    def __init__(
        self,
        db: Database,
        step: ModelStep,
        registry: ToolRegistry,
        settings: AgentSettings,
        build_context: BuildContextFactory,
    ) -> None:
        self.db = db
        self.step = step
        self.registry = registry
        self.settings = settings
        self.build_context = build_context
        self._hooks: dict[str, RunHooks] = {}
        self.name = f"engine-{secrets.token_hex(4)}"
        self.worker: RunWorker | None = None
        """Executes the background runs of every surface (``rixin.agents.worker.run_worker``)."""

    def register_surface(self, surface: str, hooks: RunHooks) -> None:
        """Say how runs created by ``surface`` (``response``, ``assistants``) get context."""
        self._hooks[surface] = hooks

    def hooks(self, surface: str) -> RunHooks:
        return self._hooks.get(surface) or NoHooks()

    # -- creating ------------------------------------------------------------------------

    async def create_run(
        self,
        session: AsyncSession,
        *,
        project_id: str,
        surface: str,
        model: str,
        params: JSONDict,
        inputs: Sequence[StoredItem],
        background: bool = False,
        store: bool = True,
        previous_run_id: str | None = None,
        conversation_id: str | None = None,
        run_id: str | None = None,
        owner: str | None = None,
    ) -> AgentRunRecord:
        """Insert a ``queued`` run and its input items in the caller's transaction.

        With ``owner`` the run is inserted ``in_progress`` under that executor's lease instead
        (see ``start_run``).
        """
        now = now_s()
        run = AgentRunRecord(
            id=run_id or new_id("resp"),
            project_id=project_id,
            surface=surface,
            status=RunStatus.IN_PROGRESS if owner else RunStatus.QUEUED,
            model=model,
            background=background,
            store=store,
            params=params,
            previous_run_id=previous_run_id,
            conversation_id=conversation_id,
            steps=0,
            tool_calls_used=0,
            lease_owner=owner,
            # A foreground run is executed at once; if its process dies the lease lapses.
            lease_expires_at=None
            if background and owner is None
            else time.time() + self.settings.run_lease_s,
            created_at=now,
            updated_at=now,
        )
        session.add(run)
        await session.flush()
        await _insert_items(session, run, "input", 0, inputs)
        return run

    async def start_run(
        self, session: AsyncSession, *, toolset: Toolset | None = None, **fields: Any
    ) -> RunState:
        """``create_run`` for a run the caller executes at once: ``execute(run_id, state=…)``.

        The run is inserted ``in_progress`` under a lease of this engine and its history is read
        in the caller's transaction, so execution writes nothing before the first model step.
        If the process dies before then, the lease lapses and ``sweep`` settles the run.
        ``toolset``: the run's tools, when the caller built them already (with the run's
        ``build_context``), so they are not built again (an ``mcp`` tool lists its server's).
        """
        owner = self._new_owner()
        run = await self.create_run(session, **fields, owner=owner)
        history = await self.hooks(run.surface).history(session, run)
        state = RunState(
            run=run,
            owner=owner,
            inputs=list(fields.get("inputs") or ()),
            history=history,
            output=[],
        )
        if toolset is not None:
            state.toolset, state.tools_built = toolset, True
        return state

    def _new_owner(self) -> str:
        return f"{self.name}:{secrets.token_hex(4)}"

    # -- executing -----------------------------------------------------------------------

    async def execute(
        self,
        run_id: str,
        *,
        sink: Sink = no_sink,
        detach: bool = False,
        state: RunState | None = None,
    ) -> RunView | None:
        """Drive the run until it settles; returns the run as settled here (None when this
        executor did not settle it: not runnable, or its lease was lost).

        ``detach``: when this task is cancelled from outside (a worker shutting down), leave
        the run as it is for the next executor; otherwise (a client went away) cancel it.
        ``state``: the hold ``start_run`` returned, so the run is not read again.
        """
        if state is None:
            state = await self._begin(run_id)
            if state is None:
                return None
        await sink(RunUpdated(view_of(state.run, state.output)))
        inner = asyncio.create_task(self._drive(state, sink), name=f"rixin-run-{run_id}")
        beat = asyncio.create_task(self._heartbeat(state, inner))
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            inner.cancel()
            with contextlib.suppress(BaseException):
                await inner
            if not detach and not state.lost:
                await _shielded(self._settle(state, RunStatus.CANCELLED, sink))
            raise
        finally:
            beat.cancel()
        return state.settled

    async def _drive(self, state: RunState, sink: Sink) -> None:
        try:
            await self._loop(state, sink)
        except asyncio.CancelledError:
            if state.cancel_requested and not state.lost:
                await _shielded(self._settle(state, RunStatus.CANCELLED, sink))
            elif not state.cancel_requested and not state.lost:
                raise
        except LeaseLost:
            log.info("run %s: lease lost; another executor continues it", state.run.id)
        except Exception as exc:
            if not isinstance(exc, RixinError):
                log.exception("run %s failed", state.run.id)
            else:
                log.warning("run %s failed: %s", state.run.id, exc.message)
            with contextlib.suppress(LeaseLost):
                await self._settle(state, RunStatus.FAILED, sink, error=error_body(exc))

    async def _begin(self, run_id: str) -> RunState | None:
        """Take over a run (a job, a restart): one transaction reads all the executor needs."""
        owner = self._new_owner()
        async with self.db.session() as session:
            run = await session.get(AgentRunRecord, run_id)
            if run is None or run.status not in ACTIVE:
                return None
            if run.status == RunStatus.CANCELLING:
                run.status = RunStatus.CANCELLED
                run.updated_at = now_s()
                run.lease_owner = None
                return None
            run.status = RunStatus.IN_PROGRESS
            run.lease_owner = owner
            run.lease_expires_at = time.time() + self.settings.run_lease_s
            run.updated_at = now_s()
            history = await self.hooks(run.surface).history(session, run)
            inputs, output = await load_run_items(session, run.id)
            ledger: list[ToolCallRecord] = []
            if run.tool_calls_used:  # a run that never decided a call has no ledger rows
                ledger = list(
                    await session.scalars(
                        select(ToolCallRecord)
                        .where(ToolCallRecord.run_id == run.id)
                        .order_by(ToolCallRecord.position)
                    )
                )
        pending = [row for row in ledger if row.state in ("planned", "started")]
        return RunState(
            run=run,
            owner=owner,
            inputs=inputs,
            history=history,
            output=output,
            pending=pending,
            ledger=len(ledger),
        )

    async def _heartbeat(self, state: RunState, inner: asyncio.Task[None]) -> None:
        interval = max(0.2, self.settings.run_lease_s / 3)
        while not inner.done():
            await asyncio.sleep(interval)
            try:
                async with self.db.session() as session:
                    status = await session.scalar(
                        update(AgentRunRecord)
                        .where(
                            AgentRunRecord.id == state.run.id,
                            AgentRunRecord.lease_owner == state.owner,
                            AgentRunRecord.status.in_(sorted(ACTIVE)),
                        )
                        .values(lease_expires_at=time.time() + self.settings.run_lease_s)
                        .returning(AgentRunRecord.status)
                    )
            except RixinError:
                log.warning("run %s: heartbeat failed; will retry", state.run.id)
                continue
            if status is None:  # the lease is not ours any more
                state.lost = True
                inner.cancel()
                return
            if status == RunStatus.CANCELLING:
                state.cancel_requested = True
                inner.cancel()
                return

    # -- the loop ------------------------------------------------------------------------

    async def _loop(self, state: RunState, sink: Sink) -> None:
        run = state.run
        if not state.tools_built:
            ctx = self.build_context(run.project_id, run.id)
            state.toolset = await self.registry.build(run.params.get("tools") or [], ctx)
            state.tools_built = True
        if not state.output and run.steps == 0:
            await self._start(state, sink)
        while True:
            await self._run_pending(state, sink)
            waiting = _awaiting_client(state.output)
            if waiting:
                await self._settle(state, RunStatus.REQUIRES_ACTION, sink)
                return
            result, streaming = await self._model_step(state, sink)
            if await self._record_step(state, sink, result, streaming):
                return

    async def _model_step(self, state: RunState, sink: Sink) -> tuple[StepResult, _Streaming]:
        run = state.run
        params = run.params
        messages: list[JSONDict] = []
        if params.get("instructions"):
            messages.append({"role": "system", "content": str(params["instructions"])})
        history = state.history + state.inputs + state.output
        if params.get("truncation") == "auto":
            history = history[-self.settings.max_history_items :]
        messages.extend(itemlib.to_chat_messages(history))
        tool_choice = params.get("tool_choice")
        if run.tool_calls_used and tool_choice not in (None, "auto", "none"):
            tool_choice = "auto"  # a required call was made; the model may now answer
        request = StepRequest(
            model=run.model,
            messages=messages,
            tools=state.toolset.chat_tools(),
            tool_choice=tool_choice if state.toolset.tools else None,
            parallel_tool_calls=params.get("parallel_tool_calls"),
            response_format=params.get("response_format"),
            max_tokens=params.get("max_output_tokens"),
            temperature=params.get("temperature"),
            top_p=params.get("top_p"),
        )
        streaming = _Streaming(index=len(state.output))

        async def on_text(delta: str) -> None:
            if streaming.item_id is None:
                streaming.item_id = itemlib.item_id("message")
                pending = itemlib.assistant_message("", "in_progress", id_=streaming.item_id)
                await sink(ItemAdded(streaming.index, pending))
            await sink(TextDelta(streaming.index, streaming.item_id, delta))

        return await self.step(request, on_text), streaming

    async def _record_step(
        self, state: RunState, sink: Sink, result: StepResult, streaming: _Streaming
    ) -> bool:
        """Persist one step's outcome in one transaction; True when the run settled."""
        run = state.run
        usage = _add_usage(run.usage, result)
        new_items: list[StoredItem] = []
        if result.text:
            status = "incomplete" if result.finish_reason == "length" else "completed"
            cites = itemlib.file_citations(result.text, [i.data for i in state.output])
            message = itemlib.assistant_message(
                result.text, status, id_=streaming.item_id, annotations=cites
            )
            new_items.append(StoredItem(message))
        if result.finish_reason == "length" and not result.calls:
            await self._commit(
                state,
                sink,
                new_items,
                steps=1,
                usage=usage,
                status=RunStatus.INCOMPLETE,
                incomplete={"reason": "max_output_tokens"},
            )
            return True
        if not result.calls:
            await self._commit(
                state, sink, new_items, steps=1, usage=usage, status=RunStatus.COMPLETED
            )
            return True
        limit = self._tool_limit(run)
        if run.tool_calls_used + len(result.calls) > limit:
            await self._commit(
                state,
                sink,
                new_items,
                steps=1,
                usage=usage,
                status=RunStatus.INCOMPLETE,
                incomplete={"reason": "max_tool_calls"},
            )
            return True
        planned: list[tuple[ToolCall, Tool]] = []
        for call in result.calls:
            tool = state.toolset.get(call.name)
            if tool is None:
                raise _unknown_tool(call)
            if tool.client_side:
                new_items.append(
                    StoredItem(itemlib.function_call(call.call_id, call.name, call.arguments))
                )
            elif tool.requires_approval:
                new_items.append(StoredItem(_approval_request(tool, call), _call_view(call)))
            else:
                planned.append((call, tool))
        # Only client calls or approval requests: the run waits for the client at once.
        waits = not planned and _awaiting_client([*state.output, *new_items])
        await self._commit(
            state,
            sink,
            new_items,
            steps=1,
            usage=usage,
            plan=planned,
            calls=len(result.calls),
            status=RunStatus.REQUIRES_ACTION if waits else None,
        )
        return waits

    def _tool_limit(self, run: AgentRunRecord) -> int:
        cap = self.settings.max_tool_iterations
        asked = run.params.get("max_tool_calls")
        return min(cap, asked) if isinstance(asked, int) and asked >= 0 else cap

    # -- server-side tool calls ------------------------------------------------------------

    async def _run_pending(self, state: RunState, sink: Sink) -> None:
        while state.pending:
            row = state.pending[0]
            tool = state.toolset.get(row.tool_name)
            call = ToolCall(row.call_id, row.tool_name, row.arguments)
            if tool is None:
                raise _unknown_tool(call)
            if row.state == "started" and row.side_effects:
                raise SideEffectInDoubt(
                    f"The run was interrupted while the side-effecting tool {row.tool_name!r} "
                    "was running; it was not run again. Check its effect before retrying."
                )
            await self._execute_call(state, sink, row, tool, call)
            state.pending.pop(0)

    async def _execute_call(
        self, state: RunState, sink: Sink, row: ToolCallRecord, tool: Tool, call: ToolCall
    ) -> None:
        item_id = str(row.call["item_id"])
        index = len(state.output)
        await self._mark_started(state, row)
        await sink(ItemAdded(index, tool.call_item(call, item_id, "in_progress")))
        ctx = ToolContext(state.run.project_id, state.run.id, row.id)
        try:
            output = await tool.run(call, ctx)
        except RixinError as exc:
            output = ToolOutput(f"The tool failed: {exc.message}", {}, failed=True)
        except Exception:
            log.exception("run %s: tool %s raised", state.run.id, tool.name)
            output = ToolOutput("The tool failed with an internal error.", {}, failed=True)
        item = {**tool.call_item(call, item_id, "completed"), **output.item}
        if output.failed:
            item["status"] = "failed"
        if row.call.get("approval_request_id"):
            item["approval_request_id"] = row.call["approval_request_id"]
        view = {**_call_view(call), "output": output.text}
        await self._finish_call(state, sink, row, StoredItem(item, view), output)

    async def _mark_started(self, state: RunState, row: ToolCallRecord) -> None:
        """Its own transaction, committed before the call runs (D4)."""
        async with self.db.session() as session:
            await self._write_run(session, state, self._renewal())
            await session.execute(
                update(ToolCallRecord).where(ToolCallRecord.id == row.id).values(state="started")
            )
        row.state = "started"

    async def _finish_call(
        self,
        state: RunState,
        sink: Sink,
        row: ToolCallRecord,
        stored: StoredItem,
        output: ToolOutput,
    ) -> None:
        finished = {
            "state": "failed" if output.failed else "succeeded",
            "output": {"text": output.text[:10_000]},
            "finished_at": now_s(),
        }
        position = len(state.output)
        async with self.db.session() as session:
            await self._write_run(session, state, self._renewal())
            await _insert_items(session, state.run, "output", position, [stored])
            await session.execute(
                update(ToolCallRecord).where(ToolCallRecord.id == row.id).values(**finished)
            )
        row.state = str(finished["state"])
        state.output.append(stored)
        await sink(ItemDone(position, stored.data))

    async def _start(self, state: RunState, sink: Sink) -> None:
        """The run's first writes, in one transaction: tool listings and approval answers.

        Approved calls are planned like the model's own (so they run exactly once); declined
        ones become failed call items the model sees.
        """
        requests = {
            item.id: item
            for item in state.history
            if item.type == "mcp_approval_request" and item.call is not None
        }
        new_items = [StoredItem(item) for item in state.toolset.preamble]
        planned: list[tuple[ToolCall, Tool]] = []
        approvals: dict[str, StoredItem] = {}
        for item in state.inputs:
            if item.type != "mcp_approval_response":
                continue
            request = requests.get(str(item.data["approval_request_id"]))
            if request is None or request.call is None:
                continue
            call = ToolCall(
                str(request.call["call_id"]),
                str(request.call["name"]),
                str(request.call["arguments"]),
            )
            tool = state.toolset.get(call.name)
            if tool is None:
                continue
            if item.data.get("approve"):
                planned.append((call, tool))
                approvals[call.call_id] = request
                continue
            data = tool.call_item(call, itemlib.item_id(_item_type(tool)), "failed")
            data["error"] = {"message": "The user declined this tool call."}
            data["approval_request_id"] = request.id
            view = {**_call_view(call), "output": "The user declined this tool call."}
            new_items.append(StoredItem(data, view))
        if new_items or planned:
            await self._commit(
                state, sink, new_items, plan=planned, approvals=approvals, calls=len(planned)
            )

    # -- persistence -----------------------------------------------------------------------

    def _renewal(self) -> JSONDict:
        return {"updated_at": now_s(), "lease_expires_at": time.time() + self.settings.run_lease_s}

    async def _write_run(
        self, session: AsyncSession, state: RunState, values: JSONDict, *, leased: bool = True
    ) -> None:
        """Update the run's row, only while this executor holds the lease (``leased``): the
        lease check is the UPDATE's own WHERE clause. ``LeaseLost`` (rolling back the whole
        transaction) when it matched nothing."""
        query = update(AgentRunRecord).where(AgentRunRecord.id == state.run.id)
        if leased:
            query = query.where(
                AgentRunRecord.lease_owner == state.owner,
                AgentRunRecord.status.in_(sorted(ACTIVE)),
            )
        result = await session.execute(query.values(**values))
        if getattr(result, "rowcount", 0) != 1:
            state.lost = True
            raise LeaseLost(state.run.id)

    async def _commit(
        self,
        state: RunState,
        sink: Sink,
        new_items: Sequence[StoredItem] = (),
        *,
        steps: int = 0,
        usage: JSONDict | None = None,
        plan: Sequence[tuple[ToolCall, Tool]] = (),
        approvals: dict[str, StoredItem] | None = None,
        calls: int = 0,
        status: RunStatus | None = None,
        error: JSONDict | None = None,
        incomplete: JSONDict | None = None,
    ) -> None:
        """One transaction: the run's row (lease checked, counters, and with ``status`` the
        settling), output items, planned calls, and the surface's ``on_settled`` hook."""
        run = state.run
        values = self._renewal()
        if steps:
            values["steps"] = run.steps + steps
        if calls:
            values["tool_calls_used"] = run.tool_calls_used + calls
        if usage is not None:
            values["usage"] = usage
        if status is not None:
            values.update(
                status=status,
                error=error,
                incomplete_details=incomplete,
                lease_owner=None,
                lease_expires_at=None,
            )
            if status in (RunStatus.COMPLETED, RunStatus.REQUIRES_ACTION):
                values["completed_at"] = values["updated_at"]
        first = len(state.output)
        output = [*state.output, *new_items]
        ledger = [
            _ledger_record(
                run, call, tool, state.ledger + offset, (approvals or {}).get(call.call_id)
            )
            for offset, (call, tool) in enumerate(plan)
        ]
        hooked = status in (RunStatus.COMPLETED, RunStatus.REQUIRES_ACTION, RunStatus.INCOMPLETE)
        before = {key: getattr(run, key) for key in values}
        _assign(run, values)  # what on_settled sees; undone if the transaction fails
        try:
            async with self.db.session() as session:
                leased = status != RunStatus.CANCELLED or not state.lost
                await self._write_run(session, state, values, leased=leased)
                await _insert_items(session, run, "output", first, new_items)
                session.add_all(ledger)
                if hooked:
                    await self.hooks(run.surface).on_settled(session, run, state.inputs, output)
        except BaseException:
            _assign(run, before)
            raise
        state.output.extend(new_items)
        state.pending.extend(ledger)
        state.ledger += len(ledger)
        for offset, item in enumerate(new_items):
            await sink(ItemDone(first + offset, item.data, settled=hooked))
        if status is not None:
            state.settled = view_of(run, state.output)
            await sink(RunUpdated(state.settled))

    async def _settle(
        self,
        state: RunState,
        status: RunStatus,
        sink: Sink,
        *,
        error: JSONDict | None = None,
        incomplete: JSONDict | None = None,
    ) -> None:
        await self._commit(state, sink, status=status, error=error, incomplete=incomplete)

    # -- outside the executor ----------------------------------------------------------------

    async def request_cancel(self, session: AsyncSession, run: AgentRunRecord) -> None:
        """Ask the executor to stop (it notices at its next heartbeat); a queued run stops now."""
        if run.status == RunStatus.QUEUED:
            run.status = RunStatus.CANCELLED
        elif run.status == RunStatus.IN_PROGRESS:
            run.status = RunStatus.CANCELLING
        run.updated_at = now_s()

    async def sweep(self, job_alive: Callable[[AgentRunRecord], Any]) -> int:
        """Settle runs whose executor vanished (lease lapsed); returns how many were settled.

        A background run whose job may still run it (``await job_alive(run)`` is true) is left
        for the job queue to resume; every other one fails with ``server_error``.
        """
        now = time.time()
        async with self.db.session(readonly=True) as session:
            stale = list(
                await session.scalars(
                    select(AgentRunRecord).where(
                        AgentRunRecord.status.in_(sorted(ACTIVE)),
                        (AgentRunRecord.lease_expires_at < now)
                        | (AgentRunRecord.lease_expires_at.is_(None)),
                    )
                )
            )
        settled = 0
        for run in stale:
            if run.background and await job_alive(run):
                continue
            if run.lease_expires_at is None and not run.background:
                continue
            settled += await self._settle_stale(run.id, now)
        return settled

    async def _settle_stale(self, run_id: str, now: float) -> int:
        async with self.db.session() as session:
            run = await session.get(AgentRunRecord, run_id)
            if run is None or run.status not in ACTIVE:
                return 0
            if run.lease_expires_at is not None and run.lease_expires_at >= now:
                return 0
            if run.status == RunStatus.CANCELLING:
                run.status = RunStatus.CANCELLED
            else:
                run.status = RunStatus.FAILED
                run.error = {
                    "code": "server_error",
                    "message": "The server stopped while generating this response.",
                }
            run.lease_owner = None
            run.lease_expires_at = None
            run.updated_at = now_s()
            log.warning("run %s settled as %s: its executor vanished", run.id, run.status)
        return 1

    async def view(self, session: AsyncSession, run: AgentRunRecord) -> RunView:
        return await load_view(session, run)


# -- helpers -------------------------------------------------------------------------------


async def _shielded(coro: Any) -> None:
    with contextlib.suppress(LeaseLost, RixinError):
        await asyncio.shield(coro)


async def _insert_items(
    session: AsyncSession,
    run: AgentRunRecord,
    phase: str,
    first: int,
    items: Sequence[StoredItem],
) -> None:
    """One INSERT of the items at positions ``first``… (no unit-of-work bookkeeping)."""
    if not items:
        return
    now = now_s()
    rows = [
        {
            "id": item.id,
            "run_id": run.id,
            "project_id": run.project_id,
            "phase": phase,
            "position": first + offset,
            "type": item.type,
            "data": item.data,
            "call": item.call,
            "created_at": now,
        }
        for offset, item in enumerate(items)
    ]
    await session.execute(insert(AgentItemRecord), rows)


def _ledger_record(
    run: AgentRunRecord, call: ToolCall, tool: Tool, position: int, request: StoredItem | None
) -> ToolCallRecord:
    return ToolCallRecord(
        id=f"{run.id}:{call.call_id}"[:200],
        run_id=run.id,
        project_id=run.project_id,
        call_id=call.call_id,
        position=position,
        tool_type=tool.type,
        tool_name=tool.name,
        arguments=call.arguments,
        side_effects=tool.side_effects,
        state="planned",
        call={
            "item_id": itemlib.item_id(_item_type(tool)),
            "approval_request_id": request.id if request else None,
        },
        created_at=now_s(),
    )


def _assign(run: AgentRunRecord, values: JSONDict) -> None:
    for key, value in values.items():
        setattr(run, key, value)


def _add_usage(usage: JSONDict | None, result: StepResult) -> JSONDict:
    usage = dict(usage or {})
    inputs = int(usage.get("input_tokens", 0)) + result.input_tokens
    outputs = int(usage.get("output_tokens", 0)) + result.output_tokens
    return {
        "input_tokens": inputs,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inputs + outputs,
    }


def _call_view(call: ToolCall) -> JSONDict:
    return {"call_id": call.call_id, "name": call.name, "arguments": call.arguments}


def _item_type(tool: Tool) -> str:
    return {
        "file_search": "file_search_call",
        "code_interpreter": "code_interpreter_call",
        "mcp": "mcp_call",
    }.get(tool.type, "function_call")


def _approval_request(tool: Tool, call: ToolCall) -> JSONDict:
    return {
        "id": itemlib.item_id("mcp_approval_request"),
        "type": "mcp_approval_request",
        "server_label": str(getattr(tool, "server_label", "") or tool.type),
        "name": str(getattr(tool, "remote_name", "") or tool.name),
        "arguments": call.arguments,
    }


def _awaiting_client(output: list[StoredItem]) -> bool:
    """The run's own output holds client calls or approval requests nobody answered yet."""
    return any(item.type in ("function_call", "mcp_approval_request") for item in output)


def _unknown_tool(call: ToolCall) -> RixinError:
    return RixinError(f"The model called a tool that was not offered: {call.name[:64]!r}.")
