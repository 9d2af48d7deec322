"""Run statuses, snapshots, live events and the hooks an API surface gives the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.agents.items import StoredItem
from rixin.store.records_agents import AgentItemRecord, AgentRunRecord

JSONDict = dict[str, Any]


class RunStatus(StrEnum):
    """OpenAI's run statuses (Assistants v2); the Responses API shows a subset of them."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    EXPIRED = "expired"


ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.IN_PROGRESS, RunStatus.CANCELLING})
"""Someone is (or should be) executing the run."""
TERMINAL = frozenset(
    {
        RunStatus.CANCELLED,
        RunStatus.FAILED,
        RunStatus.COMPLETED,
        RunStatus.INCOMPLETE,
        RunStatus.EXPIRED,
    }
)
SETTLED = TERMINAL | {RunStatus.REQUIRES_ACTION}
"""Nothing more happens without the client (``requires_action`` waits for its answer)."""


@dataclass(frozen=True)
class RunView:
    """A snapshot of a run and its output items, for rendering on any API surface."""

    id: str
    project_id: str
    surface: str
    status: str
    model: str
    background: bool
    store: bool
    params: JSONDict
    previous_run_id: str | None
    conversation_id: str | None
    error: JSONDict | None
    incomplete_details: JSONDict | None
    usage: JSONDict | None
    created_at: int
    completed_at: int | None
    output: list[StoredItem] = field(default_factory=list)


def view_of(run: AgentRunRecord, output: list[StoredItem]) -> RunView:
    return RunView(
        id=run.id,
        project_id=run.project_id,
        surface=run.surface,
        status=run.status,
        model=run.model,
        background=run.background,
        store=run.store,
        params=dict(run.params or {}),
        previous_run_id=run.previous_run_id,
        conversation_id=run.conversation_id,
        error=run.error,
        incomplete_details=run.incomplete_details,
        usage=run.usage,
        created_at=run.created_at,
        completed_at=run.completed_at,
        output=list(output),
    )


async def load_items(session: AsyncSession, run_id: str, phase: str) -> list[StoredItem]:
    rows = await session.scalars(
        select(AgentItemRecord)
        .where(AgentItemRecord.run_id == run_id, AgentItemRecord.phase == phase)
        .order_by(AgentItemRecord.position)
    )
    return [StoredItem(dict(row.data), dict(row.call) if row.call else None) for row in rows]


async def load_runs_items(
    session: AsyncSession, run_ids: Sequence[str]
) -> dict[str, tuple[list[StoredItem], list[StoredItem]]]:
    """The ``(input, output)`` items of each run, in order, in one query."""
    found: dict[str, tuple[list[StoredItem], list[StoredItem]]] = {
        run_id: ([], []) for run_id in run_ids
    }
    if not found:
        return found
    rows = await session.scalars(
        select(AgentItemRecord)
        .where(AgentItemRecord.run_id.in_(list(found)))
        .order_by(AgentItemRecord.run_id, AgentItemRecord.phase, AgentItemRecord.position)
    )
    for row in rows:
        inputs, outputs = found[row.run_id]
        item = StoredItem(dict(row.data), dict(row.call) if row.call else None)
        (inputs if row.phase == "input" else outputs).append(item)
    return found


async def load_run_items(
    session: AsyncSession, run_id: str
) -> tuple[list[StoredItem], list[StoredItem]]:
    """A run's ``(input, output)`` items, in order, in one query."""
    return (await load_runs_items(session, [run_id]))[run_id]


async def load_view(session: AsyncSession, run: AgentRunRecord) -> RunView:
    return view_of(run, await load_items(session, run.id, "output"))


# -- live events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunUpdated:
    """The run's status (or anything on it) changed."""

    view: RunView


@dataclass(frozen=True)
class ItemAdded:
    index: int
    item: JSONDict


@dataclass(frozen=True)
class TextDelta:
    index: int
    item_id: str
    delta: str


@dataclass(frozen=True)
class ItemDone:
    index: int
    item: JSONDict
    settled: bool = False
    """Stored in the transaction that settled the run, so the surface's ``on_settled`` hook
    has seen it already."""


RunEvent = RunUpdated | ItemAdded | TextDelta | ItemDone
Sink = Callable[[RunEvent], Awaitable[None]]


async def no_sink(event: RunEvent) -> None:
    return None


# -- what an API surface gives the engine ---------------------------------------------------


class RunHooks(Protocol):
    """Per-surface behaviour: where a run's prior context comes from, what finishing does."""

    async def history(self, session: AsyncSession, run: AgentRunRecord) -> list[StoredItem]:
        """Items the model sees before the run's own input (previous responses, a thread)."""
        ...

    async def on_settled(
        self,
        session: AsyncSession,
        run: AgentRunRecord,
        inputs: list[StoredItem],
        outputs: list[StoredItem],
    ) -> None:
        """Called in the transaction that settles the run (e.g. append to a conversation)."""
        ...


class NoHooks:
    async def history(self, session: AsyncSession, run: AgentRunRecord) -> list[StoredItem]:
        return []

    async def on_settled(
        self,
        session: AsyncSession,
        run: AgentRunRecord,
        inputs: list[StoredItem],
        outputs: list[StoredItem],
    ) -> None:
        return None
