"""External knowledge: a vector store may be backed by a Dify-style ``/retrieval`` endpoint.

Revision ID: 0007
Revises: 0006
Create Date: 2025-01-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vector_stores") as batch:
        batch.add_column(sa.Column("external", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vector_stores") as batch:
        batch.drop_column("external")
