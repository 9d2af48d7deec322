"""Conversations (Responses API): durable item lists that responses read and append to.

Every call is scoped to the caller's project; another project's conversation or item is
``NotFound`` (A1). A response created with ``conversation`` sees the conversation's items before
its own input, and appends its input and output items when it settles, in the same transaction
(so they are added exactly once, with the ids they have on the response).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.agents.items import StoredItem, normalize_input
from rixin.errors import NotFound
from rixin.schemas.conversations import (
    ConversationResource,
    CreateConversationBody,
    DeletedConversationResource,
)
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records import now_s
from rixin.store.records_agents import ConversationItemRecord, ConversationRecord

JSONDict = dict[str, Any]
Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class ItemPage:
    data: list[JSONDict]
    has_more: bool

    def body(self) -> JSONDict:
        return {
            "object": "list",
            "data": self.data,
            "first_id": self.data[0]["id"] if self.data else None,
            "last_id": self.data[-1]["id"] if self.data else None,
            "has_more": self.has_more,
        }


class ConversationService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, project_id: str, body: CreateConversationBody) -> ConversationResource:
        items = normalize_input(body.items or [], "items")
        async with self.db.session() as session:
            record = ConversationRecord(
                id=new_id("conv"),
                project_id=project_id,
                metadata_=body.metadata,
                created_at=now_s(),
            )
            session.add(record)
            await session.flush()
            await append_items(session, record, items, run_id=None)
        return view(record)

    async def retrieve(self, project_id: str, conversation_id: str) -> ConversationResource:
        async with self.db.session(readonly=True) as session:
            return view(await get_conversation(session, project_id, conversation_id))

    async def update(
        self, project_id: str, conversation_id: str, metadata: dict[str, str]
    ) -> ConversationResource:
        async with self.db.session() as session:
            record = await get_conversation(session, project_id, conversation_id)
            record.metadata_ = metadata
            return view(record)

    async def delete(self, project_id: str, conversation_id: str) -> DeletedConversationResource:
        async with self.db.session() as session:
            record = await get_conversation(session, project_id, conversation_id)
            await session.execute(
                delete(ConversationItemRecord).where(
                    ConversationItemRecord.conversation_id == record.id
                )
            )
            await session.delete(record)
        return DeletedConversationResource(id=conversation_id)

    async def add_items(
        self, project_id: str, conversation_id: str, raw: list[JSONDict]
    ) -> ItemPage:
        items = normalize_input(raw, "items")
        async with self.db.session() as session:
            record = await get_conversation(session, project_id, conversation_id)
            await append_items(session, record, items, run_id=None)
        return ItemPage([item.data for item in items], has_more=False)

    async def list_items(
        self,
        project_id: str,
        conversation_id: str,
        *,
        limit: int = 20,
        order: Order = "desc",
        after: str | None = None,
    ) -> ItemPage:
        async with self.db.session(readonly=True) as session:
            record = await get_conversation(session, project_id, conversation_id)
            query = select(ConversationItemRecord).where(
                ConversationItemRecord.conversation_id == record.id
            )
            if after is not None:
                anchor = await _item(session, record.id, after)
                query = query.where(
                    ConversationItemRecord.position > anchor.position
                    if order == "asc"
                    else ConversationItemRecord.position < anchor.position
                )
            column = ConversationItemRecord.position
            query = query.order_by(column.asc() if order == "asc" else column.desc())
            rows = list(await session.scalars(query.limit(limit + 1)))
        return ItemPage([dict(r.data) for r in rows[:limit]], has_more=len(rows) > limit)

    async def get_item(self, project_id: str, conversation_id: str, item_id: str) -> JSONDict:
        async with self.db.session(readonly=True) as session:
            record = await get_conversation(session, project_id, conversation_id)
            return dict((await _item(session, record.id, item_id)).data)

    async def delete_item(
        self, project_id: str, conversation_id: str, item_id: str
    ) -> ConversationResource:
        async with self.db.session() as session:
            record = await get_conversation(session, project_id, conversation_id)
            await session.delete(await _item(session, record.id, item_id))
            return view(record)


def view(record: ConversationRecord) -> ConversationResource:
    return ConversationResource(
        id=record.id, metadata=record.metadata_ or {}, created_at=record.created_at
    )


async def get_conversation(
    session: AsyncSession, project_id: str, conversation_id: str
) -> ConversationRecord:
    record = (
        await session.get(ConversationRecord, conversation_id)
        if len(conversation_id) <= 64
        else None
    )
    if record is None or record.project_id != project_id:
        raise NotFound(
            f"Conversation with id '{conversation_id[:64]}' not found.", param="conversation_id"
        )
    return record


async def _item(
    session: AsyncSession, conversation_id: str, item_id: str
) -> ConversationItemRecord:
    row = await session.get(ConversationItemRecord, item_id) if len(item_id) <= 64 else None
    if row is None or row.conversation_id != conversation_id:
        raise NotFound(f"Item with id '{item_id[:64]}' not found.", param="item_id")
    return row


async def append_items(
    session: AsyncSession,
    conversation: ConversationRecord,
    items: Sequence[StoredItem],
    *,
    run_id: str | None,
) -> None:
    """Append ``items`` (skipping any already there, by id) in the caller's transaction."""
    if not items:
        return
    ids = [item.id for item in items]
    present = set(
        await session.scalars(
            select(ConversationItemRecord.id).where(ConversationItemRecord.id.in_(ids))
        )
    )
    last = await session.scalar(
        select(func.max(ConversationItemRecord.position)).where(
            ConversationItemRecord.conversation_id == conversation.id
        )
    )
    position = -1 if last is None else int(last)
    for item in items:
        if item.id in present:
            continue
        position += 1
        session.add(
            ConversationItemRecord(
                id=item.id,
                conversation_id=conversation.id,
                project_id=conversation.project_id,
                position=position,
                type=item.type,
                data=item.data,
                call=item.call,
                run_id=run_id,
                created_at=now_s(),
            )
        )
    await session.flush()


async def conversation_history(
    session: AsyncSession, conversation_id: str, limit: int
) -> list[StoredItem]:
    """The conversation's last ``limit`` items, oldest first."""
    rows = list(
        await session.scalars(
            select(ConversationItemRecord)
            .where(ConversationItemRecord.conversation_id == conversation_id)
            .order_by(ConversationItemRecord.position.desc())
            .limit(limit)
        )
    )
    rows.reverse()
    return [StoredItem(dict(r.data), dict(r.call) if r.call else None) for r in rows]
