"""Assistants v2: assistants, threads, thread messages and runs (executed by the agent engine).

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _project_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["project_id"], ["projects.id"], name=f"fk_{table}_project_id_projects", ondelete="CASCADE"
    )


def _thread_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["thread_id"],
        ["assistant_threads.id"],
        name=f"fk_{table}_thread_id_assistant_threads",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "assistants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("rank", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("description", sa.String(512), nullable=True),
        sa.Column("instructions", sa.Text(), nullable=True),
        sa.Column("tools", sa.JSON(), nullable=False),
        sa.Column("tool_resources", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("top_p", sa.Float(), nullable=True),
        sa.Column("response_format", sa.JSON(), nullable=True),
        sa.Column("reasoning_effort", sa.String(16), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _project_fk("assistants"),
        sa.PrimaryKeyConstraint("id", name="pk_assistants"),
    )
    op.create_index("ix_assistants_project_rank", "assistants", ["project_id", "rank"])
    op.create_table(
        "assistant_threads",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("tool_resources", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _project_fk("assistant_threads"),
        sa.PrimaryKeyConstraint("id", name="pk_assistant_threads"),
    )
    op.create_index(
        "ix_assistant_threads_project", "assistant_threads", ["project_id", "created_at"]
    )
    op.create_table(
        "assistant_messages",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("thread_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sub", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("attachments", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("incomplete_details", sa.JSON(), nullable=True),
        sa.Column("assistant_id", sa.String(64), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("incomplete_at", sa.BigInteger(), nullable=True),
        _thread_fk("assistant_messages"),
        sa.PrimaryKeyConstraint("id", name="pk_assistant_messages"),
        sa.UniqueConstraint("thread_id", "seq", "sub", name="uq_assistant_messages_order"),
    )
    op.create_table(
        "assistant_runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("thread_id", sa.String(64), nullable=False),
        sa.Column("assistant_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("segments", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _project_fk("assistant_runs"),
        _thread_fk("assistant_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_assistant_runs"),
    )
    op.create_index("ix_assistant_runs_thread_seq", "assistant_runs", ["thread_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_assistant_runs_thread_seq", table_name="assistant_runs")
    op.drop_table("assistant_runs")
    op.drop_table("assistant_messages")
    op.drop_index("ix_assistant_threads_project", table_name="assistant_threads")
    op.drop_table("assistant_threads")
    op.drop_index("ix_assistants_project_rank", table_name="assistants")
    op.drop_table("assistants")
