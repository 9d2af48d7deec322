"""FAQ knowledge bases: a per-store match threshold and the questions of each FAQ entry.

Revision ID: 0006
Revises: 0005
Create Date: 2025-01-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vector_stores") as batch:
        batch.add_column(sa.Column("faq_threshold", sa.Float(), nullable=True))
    op.create_table(
        "faq_questions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("chunk_id", sa.String(64), nullable=False),
        sa.Column("vector_store_id", sa.String(64), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chunk_id"],
            ["chunks.id"],
            name="fk_faq_questions_chunk_id_chunks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_faq_questions"),
    )
    op.create_index("ix_faq_questions_store", "faq_questions", ["vector_store_id"])
    op.create_index("ix_faq_questions_chunk", "faq_questions", ["chunk_id"])


def downgrade() -> None:
    op.drop_table("faq_questions")
    with op.batch_alter_table("vector_stores") as batch:
        batch.drop_column("faq_threshold")
