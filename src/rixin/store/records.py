"""Database records (rows), SQLAlchemy 2 typed declarative.

Timestamps are integer Unix seconds, the unit of OpenAI's ``created_at``. The schema itself is
owned by the Alembic migrations in ``rixin.store.migrations``; a test checks that they agree.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def now_s() -> int:
    """The current time as integer Unix seconds."""
    return int(time.time())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ProjectRecord(Base):
    """A tenant: every key, file, store and run belongs to exactly one project."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="active")
    """``active`` or ``archived``; keys of an archived project no longer authenticate."""
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    archived_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    is_default: Mapped[bool | None] = mapped_column(Boolean, unique=True, default=None)
    """``True`` for the one default project, NULL otherwise: the unique constraint makes a
    second default impossible even when two replicas bootstrap at once."""


class ApiKeyRecord(Base):
    """An API key of a project, stored only as the SHA-256 of the secret (A7)."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_project_created", "project_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    """``admin`` (manages projects and keys) or ``member`` (uses the API)."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    redacted_value: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class IdempotencyRecord(Base):
    """The stored outcome of a POST sent with ``Idempotency-Key``, per project (D5)."""

    __tablename__ = "idempotency_records"
    __table_args__ = (Index("ix_idempotency_records_expires_at", "expires_at"),)

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    body_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    """``in_flight`` while the first request runs, ``done`` once its response is stored."""
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class AuditEventRecord(Base):
    """A security-relevant action: who did what to which object. Never holds a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_project_at", "project_id", "at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    project_id: Mapped[str | None] = mapped_column(String(64), default=None)
    actor_key_id: Mapped[str | None] = mapped_column(String(64), default=None)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(256), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# The tables of migration 0002 live in their own module; importing it registers them on Base.
from rixin.store import records_agents as _records_agents  # noqa: E402, F401
from rixin.store import records_assistants as _records_assistants  # noqa: E402, F401
from rixin.store import records_files as _records_files  # noqa: E402, F401
from rixin.store import records_vectors as _records_vectors  # noqa: E402, F401
