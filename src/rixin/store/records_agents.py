"""Agent-run records (migration 0004): runs, their items, the tool-call ledger, conversations.

A run is one execution of the agent engine: a Responses ``response`` today, an Assistants ``run``
later. Its items (input and output, in order) are stored with the OpenAI wire shape in ``data``
and, where a model must see them again, the model-facing call in ``call``. The tool-call ledger
records a server-side tool call *before* it executes, keyed by ``(run_id, call_id)``, so that a
run resumed after a crash never executes a side-effecting call twice (RELIABILITY D4).
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


class AgentRunRecord(Base):
    """One run of the agent engine, persisted at every step."""

    __tablename__ = "agent_runs"
    __table_args__ = (
        Index("ix_agent_runs_project_created", "project_id", "created_at", "id"),
        Index("ix_agent_runs_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    surface: Mapped[str] = mapped_column(String(32))
    """Which API created the run: ``response`` (Responses API) or ``assistants``."""
    status: Mapped[str] = mapped_column(String(16))
    """queued, in_progress, requires_action, cancelling, cancelled, failed, completed,
    incomplete or expired (``rixin.agents.engine.RunStatus``)."""
    model: Mapped[str] = mapped_column(String(256))
    background: Mapped[bool] = mapped_column(Boolean, default=False)
    store: Mapped[bool] = mapped_column(Boolean, default=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Everything the engine and the API surface need to run and render the run."""
    previous_run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    conversation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    incomplete_details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    """Model steps taken so far (the checkpoint counter)."""
    tool_calls_used: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    job_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class AgentItemRecord(Base):
    """An input or output item of a run, in order; ``(run_id, phase, position)`` is unique."""

    __tablename__ = "agent_items"
    __table_args__ = (
        UniqueConstraint("run_id", "phase", "position", name="uq_agent_items_position"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("agent_runs.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(8))
    """``input`` or ``output``."""
    position: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    call: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """How the model sees a tool call item: ``{call_id, name, arguments, output}``."""
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class ToolCallRecord(Base):
    """The ledger of server-side tool calls: written before a call runs, finished after."""

    __tablename__ = "agent_tool_calls"
    __table_args__ = (UniqueConstraint("run_id", "call_id", name="uq_agent_tool_calls_call"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    """The idempotency key handed to the tool: ``<run_id>:<call_id>``."""
    run_id: Mapped[str] = mapped_column(ForeignKey("agent_runs.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64))
    call_id: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer)
    """Order of the call within its run."""
    tool_type: Mapped[str] = mapped_column(String(64))
    tool_name: Mapped[str] = mapped_column(String(128))
    arguments: Mapped[str] = mapped_column(Text)
    side_effects: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16))
    """``planned`` (decided by the model, not run), ``started`` (maybe executing: a
    side-effecting call in this state is never run again), ``succeeded`` or ``failed``."""
    call: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The pending output item and model view: ``{"item_id", "output_index"}``."""
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class ConversationRecord(Base):
    """A conversation (Responses API): a durable list of items that responses append to."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class ConversationItemRecord(Base):
    """One item of a conversation; ``position`` orders them, ``id`` is the item's own id."""

    __tablename__ = "conversation_items"
    __table_args__ = (
        UniqueConstraint("conversation_id", "position", name="uq_conversation_items_position"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    call: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    """The run that added the item (None when added through the items API)."""
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
