"""Assistants v2 records (migration 0005): assistants, threads, thread messages, runs.

An Assistants *run* is executed by the agent engine (``rixin.agents``) as one or more engine runs
(``agent_runs``, ``surface="assistants"``) called *segments*: the first one starts at run
creation, each ``submit_tool_outputs`` starts the next with the tool outputs as its input. The
run's status, output items and steps are read from its segments; run steps are never stored on
their own, so a step can never be duplicated. Assistant messages are copied into the thread
under the engine item's own id (the primary key), so copying one twice is impossible (D2).

Order inside a thread is ``(seq, sub)``: ``seq`` comes from the thread's counter when a message
or run is created, ``sub`` orders a run's own messages (segment and item position).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from rixin.store.records import Base, now_s


class AssistantRecord(Base):
    __tablename__ = "assistants"
    __table_args__ = (Index("ix_assistants_project_rank", "project_id", "rank"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(BigInteger)
    """Creation time in nanoseconds: the list order (``created_at`` ties within a second)."""
    model: Mapped[str] = mapped_column(String(256))
    name: Mapped[str | None] = mapped_column(String(256), default=None)
    description: Mapped[str | None] = mapped_column(String(512), default=None)
    instructions: Mapped[str | None] = mapped_column(Text, default=None)
    tools: Mapped[list[Any]] = mapped_column(JSON, default=list)
    tool_resources: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    temperature: Mapped[float | None] = mapped_column(Float, default=None)
    top_p: Mapped[float | None] = mapped_column(Float, default=None)
    response_format: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    reasoning_effort: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class ThreadRecord(Base):
    __tablename__ = "assistant_threads"
    __table_args__ = (Index("ix_assistant_threads_project", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    tool_resources: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    next_seq: Mapped[int] = mapped_column(Integer, default=0)
    """The next ``seq`` handed to a message or run of this thread."""
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class ThreadMessageRecord(Base):
    """A message of a thread: created by the client, or copied from a run's output item."""

    __tablename__ = "assistant_messages"
    __table_args__ = (
        UniqueConstraint("thread_id", "seq", "sub", name="uq_assistant_messages_order"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("assistant_threads.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    sub: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[list[Any]] = mapped_column(JSON)
    """Wire content parts (``[{"type": "text", "text": {"value", "annotations"}}]``)."""
    attachments: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    status: Mapped[str] = mapped_column(String(16))
    incomplete_details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    assistant_id: Mapped[str | None] = mapped_column(String(64), default=None)
    run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    incomplete_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class AssistantRunRecord(Base):
    """An Assistants run; its status and output live in its engine segments."""

    __tablename__ = "assistant_runs"
    __table_args__ = (Index("ix_assistant_runs_thread_seq", "thread_id", "seq"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    thread_id: Mapped[str] = mapped_column(ForeignKey("assistant_threads.id", ondelete="CASCADE"))
    assistant_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    segments: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """Engine run ids, oldest first; the last one is current."""
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What the run object shows: model, instructions, tools, tool_choice, limits …"""
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    open: Mapped[bool] = mapped_column(Boolean, default=True)
    """Until its output has been copied into the thread after it ended."""
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
