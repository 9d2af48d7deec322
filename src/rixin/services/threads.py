"""Assistants v2 threads and their messages.

A thread's messages are ordered by ``(seq, sub)`` (see ``rixin.store.records_assistants``).
While a run of the thread is active no message may be added, as on OpenAI, so a run's context
is exactly the messages before it. Assistant messages a run produces are copied into the thread
from the engine's stored output items by ``copy_outputs``, which is idempotent: it runs when an
item is stored (live), when the run settles (in the engine's transaction) and, for runs that
ended otherwise, from the sweeper, and a message is keyed by its item's id (D2).
"""

from __future__ import annotations

import mimetypes
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.agents import items as itemlib
from rixin.agents.items import StoredItem
from rixin.agents.runs import ACTIVE, RunStatus
from rixin.errors import InvalidRequest, NotFound, UnsupportedParameter
from rixin.schemas.assistants import (
    CreateMessageRequest,
    CreateThreadRequest,
    DeleteMessageResponse,
    DeleteThreadResponse,
    ModifyThreadRequest,
)
from rixin.services.assistants import JSONDict, Order, Page, keyset, normalize_resources
from rixin.services.responses import SandboxRunner
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records import now_s
from rixin.store.records_agents import AgentItemRecord, AgentRunRecord
from rixin.store.records_assistants import AssistantRunRecord, ThreadMessageRecord, ThreadRecord

BUSY = frozenset({*ACTIVE, RunStatus.REQUIRES_ACTION})
"""A run in one of these statuses keeps its thread from taking messages or other runs."""
SEGMENT_SPAN = 100_000
"""``sub`` of a run's message: ``segment * SEGMENT_SPAN + position + 1``."""


class ThreadsService:
    def __init__(self, db: Database, check_resources: Any) -> None:
        self.db = db
        self.check_resources = check_resources
        """``(project_id, tool_resources) -> None``; raises for another tenant's stores."""

    # -- threads -----------------------------------------------------------------------------

    async def create(self, project_id: str, body: CreateThreadRequest) -> JSONDict:
        resources = normalize_resources(body.tool_resources)
        await self.check_resources(project_id, resources)
        messages = [prepare_message(m, f"messages[{i}]") for i, m in enumerate(body.messages or [])]
        async with self.db.session() as session:
            thread = await create_thread(session, project_id, resources, body.metadata)
            for message in messages:
                await add_message(session, thread, message)
            return render_thread(thread)

    async def retrieve(self, project_id: str, thread_id: str) -> JSONDict:
        async with self.db.session(readonly=True) as session:
            return render_thread(await get_thread(session, project_id, thread_id))

    async def modify(self, project_id: str, thread_id: str, body: ModifyThreadRequest) -> JSONDict:
        fields = body.model_fields_set
        resources = normalize_resources(body.tool_resources)
        if "tool_resources" in fields:
            await self.check_resources(project_id, resources)
        async with self.db.session() as session:
            thread = await get_thread(session, project_id, thread_id)
            if "tool_resources" in fields:
                thread.tool_resources = resources
            if "metadata" in fields:
                thread.metadata_ = body.metadata or {}
            return render_thread(thread)

    async def delete(self, project_id: str, thread_id: str) -> DeleteThreadResponse:
        async with self.db.session() as session:
            thread = await get_thread(session, project_id, thread_id)
            runs = list(
                await session.scalars(
                    select(AssistantRunRecord).where(AssistantRunRecord.thread_id == thread.id)
                )
            )
            segments = [s for run in runs for s in run.segments or []]
            if segments:
                await session.execute(delete(AgentRunRecord).where(AgentRunRecord.id.in_(segments)))
            await session.execute(
                delete(AssistantRunRecord).where(AssistantRunRecord.thread_id == thread.id)
            )
            await session.execute(
                delete(ThreadMessageRecord).where(ThreadMessageRecord.thread_id == thread.id)
            )
            await session.delete(thread)
        return DeleteThreadResponse(id=thread_id)

    # -- messages ----------------------------------------------------------------------------

    async def create_message(
        self, project_id: str, thread_id: str, body: CreateMessageRequest
    ) -> JSONDict:
        message = prepare_message(body, None)
        async with self.db.session() as session:
            thread = await get_thread(session, project_id, thread_id)
            await ensure_idle(session, thread)
            return render_message(await add_message(session, thread, message))

    async def list_messages(
        self,
        project_id: str,
        thread_id: str,
        *,
        limit: int = 20,
        order: Order = "desc",
        after: str | None = None,
        before: str | None = None,
        run_id: str | None = None,
    ) -> Page:
        async with self.db.session(readonly=True) as session:
            thread = await get_thread(session, project_id, thread_id)
            anchors: list[tuple[Any, ...] | None] = []
            for cursor, param in ((after, "after"), (before, "before")):
                if cursor is None:
                    anchors.append(None)
                    continue
                anchor = await get_message(session, thread, cursor, param=param)
                anchors.append((anchor.seq, anchor.sub))
            query = select(ThreadMessageRecord).where(ThreadMessageRecord.thread_id == thread.id)
            if run_id is not None:
                query = query.where(ThreadMessageRecord.run_id == run_id)
            rows, has_more = await keyset(
                session,
                query,
                [ThreadMessageRecord.seq, ThreadMessageRecord.sub],
                limit=limit,
                order=order,
                after=anchors[0],
                before=anchors[1],
            )
        return Page([render_message(r) for r in rows], has_more)

    async def retrieve_message(self, project_id: str, thread_id: str, message_id: str) -> JSONDict:
        async with self.db.session(readonly=True) as session:
            thread = await get_thread(session, project_id, thread_id)
            return render_message(await get_message(session, thread, message_id))

    async def modify_message(
        self, project_id: str, thread_id: str, message_id: str, metadata: dict[str, str] | None
    ) -> JSONDict:
        async with self.db.session() as session:
            thread = await get_thread(session, project_id, thread_id)
            message = await get_message(session, thread, message_id)
            message.metadata_ = metadata or {}
            return render_message(message)

    async def delete_message(
        self, project_id: str, thread_id: str, message_id: str
    ) -> DeleteMessageResponse:
        async with self.db.session() as session:
            thread = await get_thread(session, project_id, thread_id)
            await session.delete(await get_message(session, thread, message_id))
        return DeleteMessageResponse(id=message_id)


# -- helpers shared with runs -------------------------------------------------------------------


async def create_thread(
    session: AsyncSession,
    project_id: str,
    resources: JSONDict,
    metadata: dict[str, str] | None,
) -> ThreadRecord:
    thread = ThreadRecord(
        id=new_id("thread"),
        project_id=project_id,
        tool_resources=resources,
        metadata_=metadata or {},
        next_seq=0,
        created_at=now_s(),
    )
    session.add(thread)
    await session.flush()
    return thread


async def get_thread(
    session: AsyncSession, project_id: str, thread_id: str, *, param: str = "thread_id"
) -> ThreadRecord:
    thread = await session.get(ThreadRecord, thread_id) if len(thread_id) <= 64 else None
    if thread is None or thread.project_id != project_id:
        raise NotFound(f"No thread found with id '{thread_id[:64]}'.", param=param)
    return thread


async def get_message(
    session: AsyncSession, thread: ThreadRecord, message_id: str, *, param: str = "message_id"
) -> ThreadMessageRecord:
    row = await session.get(ThreadMessageRecord, message_id) if len(message_id) <= 64 else None
    if row is None or row.thread_id != thread.id:
        raise NotFound(f"No message found with id '{message_id[:64]}'.", param=param)
    return row


async def ensure_idle(session: AsyncSession, thread: ThreadRecord) -> None:
    """Refuse while a run of the thread is active (OpenAI: one active run per thread)."""
    run = await session.scalar(
        select(AssistantRunRecord)
        .where(AssistantRunRecord.thread_id == thread.id)
        .order_by(AssistantRunRecord.seq.desc())
        .limit(1)
    )
    if run is None or not run.segments:
        return
    status = await session.scalar(
        select(AgentRunRecord.status).where(AgentRunRecord.id == run.segments[-1])
    )
    if status in BUSY:
        raise InvalidRequest(
            f"Thread {thread.id} already has an active run {run.id}.", param="thread_id"
        )


def next_seq(thread: ThreadRecord) -> int:
    seq = thread.next_seq
    thread.next_seq = seq + 1
    return seq


def prepare_message(body: CreateMessageRequest, param: str | None) -> JSONDict:
    """A client message's role, wire content and metadata (only text content is supported)."""
    prefix = f"{param}." if param else ""
    if body.attachments:
        raise UnsupportedParameter(
            "Message attachments are not supported yet; attach a vector store to the thread.",
            param=f"{prefix}attachments",
        )
    if isinstance(body.content, str):
        texts = [body.content]
    else:
        texts = []
        for j, part in enumerate(body.content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise UnsupportedParameter(
                    "Only text content parts are supported.", param=f"{prefix}content[{j}]"
                )
            texts.append(part["text"])
    return {
        "role": body.role,
        "content": [text_part(t) for t in texts],
        "metadata": body.metadata or {},
    }


def text_part(text: str, annotations: list[JSONDict] | None = None) -> JSONDict:
    return {"type": "text", "text": {"value": text, "annotations": annotations or []}}


def assistant_content(data: JSONDict) -> list[JSONDict]:
    """An assistant message item's content: its text, then an ``image_file`` part for each
    image the answer cites (``container_file_citation``: what code_interpreter produced)."""
    images = [
        str(note["file_id"])
        for part in data.get("content") or []
        if isinstance(part, dict)
        for note in part.get("annotations") or []
        if note.get("type") == "container_file_citation"
        and note.get("file_id")
        and mimetypes.guess_type(str(note.get("filename") or ""))[0] in SandboxRunner.IMAGE_TYPES
    ]
    text = text_part(itemlib.message_text(data), itemlib.message_annotations(data))
    return [text, *({"type": "image_file", "image_file": {"file_id": i}} for i in images)]


async def add_message(
    session: AsyncSession, thread: ThreadRecord, message: JSONDict
) -> ThreadMessageRecord:
    now = now_s()
    row = ThreadMessageRecord(
        id=new_id("msg"),
        thread_id=thread.id,
        project_id=thread.project_id,
        seq=next_seq(thread),
        sub=0,
        role=message["role"],
        content=message["content"],
        attachments=[],
        metadata_=message["metadata"],
        status="completed",
        created_at=now,
        completed_at=now,
    )
    session.add(row)
    await session.flush()
    return row


def render_thread(thread: ThreadRecord) -> JSONDict:
    return {
        "id": thread.id,
        "object": "thread",
        "created_at": thread.created_at,
        "tool_resources": dict(thread.tool_resources or {}),
        "metadata": dict(thread.metadata_ or {}),
    }


def render_message(row: ThreadMessageRecord) -> JSONDict:
    return {
        "id": row.id,
        "object": "thread.message",
        "created_at": row.created_at,
        "thread_id": row.thread_id,
        "status": row.status,
        "incomplete_details": row.incomplete_details,
        "completed_at": row.completed_at,
        "incomplete_at": row.incomplete_at,
        "role": row.role,
        "content": list(row.content or []),
        "assistant_id": row.assistant_id,
        "run_id": row.run_id,
        "attachments": list(row.attachments or []),
        "metadata": dict(row.metadata_ or {}),
    }


def message_text(row: ThreadMessageRecord) -> str:
    return "".join(
        str((part.get("text") or {}).get("value", ""))
        for part in row.content or []
        if isinstance(part, dict) and part.get("type") == "text"
    )


async def thread_history(
    session: AsyncSession,
    thread_id: str,
    before_seq: int,
    *,
    last_messages: int | None,
    max_chars: int | None,
    limit: int,
) -> list[StoredItem]:
    """The thread's messages before ``before_seq`` as engine items (oldest first)."""
    take = min(limit, last_messages) if last_messages else limit
    rows = list(
        await session.scalars(
            select(ThreadMessageRecord)
            .where(ThreadMessageRecord.thread_id == thread_id, ThreadMessageRecord.seq < before_seq)
            .order_by(ThreadMessageRecord.seq.desc(), ThreadMessageRecord.sub.desc())
            .limit(take)
        )
    )
    items: list[StoredItem] = []
    used = 0
    for row in rows:
        text = message_text(row)
        used += len(text)
        if max_chars is not None and items and used > max_chars:
            break  # max_prompt_tokens: keep the newest messages that fit
        if row.role == "assistant":
            data = itemlib.assistant_message(text, id_=row.id)
        else:
            data = {**itemlib.user_message(text), "id": row.id}
        items.append(StoredItem(data))
    items.reverse()
    return items


# -- copying a run's output into its thread -------------------------------------------------------


async def copy_outputs(session: AsyncSession, segment: AgentRunRecord) -> int:
    """Copy the segment's stored assistant messages into its thread (skipping those there)."""
    info = (segment.params or {}).get("assistants") or {}
    thread = await session.get(ThreadRecord, str(info.get("thread_id", "")))
    if thread is None:
        return 0
    rows = list(
        await session.scalars(
            select(AgentItemRecord).where(
                AgentItemRecord.run_id == segment.id,
                AgentItemRecord.phase == "output",
                AgentItemRecord.type == "message",
            )
        )
    )
    if not rows:
        return 0
    present = set(
        await session.scalars(
            select(ThreadMessageRecord.id).where(ThreadMessageRecord.id.in_([r.id for r in rows]))
        )
    )
    added = 0
    for row in rows:
        if row.id in present:
            continue
        data = row.data
        incomplete = data.get("status") == "incomplete"
        session.add(
            ThreadMessageRecord(
                id=row.id,
                thread_id=thread.id,
                project_id=thread.project_id,
                seq=int(info["seq"]),
                sub=int(info["segment"]) * SEGMENT_SPAN + row.position + 1,
                role="assistant",
                content=assistant_content(data),
                attachments=[],
                metadata_={},
                status="incomplete" if incomplete else "completed",
                incomplete_details={"reason": "max_tokens"} if incomplete else None,
                assistant_id=info.get("assistant_id"),
                run_id=info.get("run_id"),
                created_at=row.created_at,
                completed_at=None if incomplete else row.created_at,
                incomplete_at=row.created_at if incomplete else None,
            )
        )
        added += 1
    await session.flush()
    return added
