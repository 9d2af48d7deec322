"""Records of files, uploads, blobs and background jobs (migration ``0002``).

``records.py`` imports this module at its end, so ``Base.metadata`` (and Alembic) always see
these tables. Timestamps are integer Unix seconds like everywhere else, except the two that
leases and back-off compare against the clock (``run_after``, ``lease_expires_at``): those are
float seconds, because a lease of a few seconds needs better than one-second resolution.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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


class BlobRecord(Base):
    """One stored content (``<data_dir>/files/ab/cd/<sha256>``) and how many rows use it.

    The reference count is changed only under this row's lock, and a blob's file is created or
    removed only while that lock is held, so a delete never races an upload of the same bytes.
    A row at ``refcount == 0`` is garbage: its file may or may not still exist.
    """

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    refcount: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class FileRecord(Base):
    """An OpenAI ``file``: a project's named reference to a blob."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_project_created", "project_id", "created_at_ms", "id"),
        Index("ix_files_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    """Display only, sanitised; never used to build a path (B7)."""
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="processed")
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    created_at_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    """Creation in milliseconds: orders lists (files made in one second keep their order)."""
    expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class UploadRecord(Base):
    """An OpenAI ``upload``: parts added one by one, then completed into a file."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending``, ``completed``, ``cancelled`` or ``expired``."""
    file_expires_after_s: Mapped[int | None] = mapped_column(BigInteger, default=None)
    file_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class UploadPartRecord(Base):
    """One part of an upload; its bytes are a blob."""

    __tablename__ = "upload_parts"
    __table_args__ = (Index("ix_upload_parts_upload_id", "upload_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)


class JobRecord(Base):
    """A durable background job (see ``rixin.jobs.queue``)."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("project_id", "kind", "idempotency_key", name="uq_jobs_idempotency"),
        Index("ix_jobs_state_run_after", "state", "run_after"),
        Index("ix_jobs_project_created", "project_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    """``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[float] = mapped_column(Float, default=0.0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
