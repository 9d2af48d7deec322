"""Records of the Vector Stores API: stores, their files and batches, and the chunks.

The chunks table is the source of truth for retrieval: each row holds a chunk's text and its
embedding (float32, little-endian), and the BM25 and ANN indexes under ``<data_dir>/index/`` are
rebuilt from it. ``vector_stores.chunks_version`` is bumped in every transaction that changes a
store's chunks, so an index knows when it is stale.

Orphans are impossible by construction: chunks reference their vector store file with
``ON DELETE CASCADE``, and files their vector store, so detaching a file or deleting a store
removes every chunk in the same transaction. A file's chunks are replaced (delete, then insert)
in one transaction, and ``(vector_store_id, file_id, ordinal)`` is unique, so a retried
ingestion can never duplicate them.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from rixin.store.records import Base, now_s


def now_ns() -> int:
    """Creation order within a second (ids are random, ``created_at`` is whole seconds)."""
    return time.time_ns()


class VectorStoreRecord(Base):
    """A vector store of one project (OpenAI ``vector_store``)."""

    __tablename__ = "vector_stores"
    __table_args__ = (Index("ix_vector_stores_project_created", "project_id", "created_ns", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    created_ns: Mapped[int] = mapped_column(BigInteger, default=now_ns)
    last_active_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    expires_after_days: Mapped[int | None] = mapped_column(Integer, default=None)
    """``expires_after.days`` (the anchor is always ``last_active_at``); NULL: never expires."""
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, default=None)
    embedding_model: Mapped[str] = mapped_column(String(256))
    """The embedding model of every chunk in the store, chosen at creation (rixin extension)."""
    chunks_version: Mapped[int] = mapped_column(BigInteger, default=0)
    """Bumped whenever the store's chunks change; the derived indexes record the version
    they reflect and catch up when it differs."""
    external: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """Set when the store is backed by an external knowledge endpoint (``rixin.knowledge.
    external``): ``{endpoint, knowledge_id, api_key_env, api_key}``; it then has no files."""
    faq_threshold: Mapped[float | None] = mapped_column(Float, default=None)
    """The cosine similarity from which a FAQ entry's question matches a query (rixin
    extension); NULL: ``rixin.knowledge.faq.DEFAULT_FAQ_THRESHOLD``."""


class VectorStoreFileBatchRecord(Base):
    """A batch of files attached together (OpenAI ``vector_store.files_batch``)."""

    __tablename__ = "vector_store_file_batches"
    __table_args__ = (Index("ix_vector_store_file_batches_store", "vector_store_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    vector_store_id: Mapped[str] = mapped_column(ForeignKey("vector_stores.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Set by ``cancel``; the batch's status is otherwise derived from its files."""


class VectorStoreFileRecord(Base):
    """A file attached to a vector store (OpenAI ``vector_store.file``)."""

    __tablename__ = "vector_store_files"
    __table_args__ = (
        Index("ix_vector_store_files_store_created", "vector_store_id", "created_ns", "file_id"),
        Index("ix_vector_store_files_batch_id", "batch_id"),
        Index("ix_vector_store_files_file_id", "file_id"),
        Index("ix_vector_store_files_status", "status"),
    )

    vector_store_id: Mapped[str] = mapped_column(
        ForeignKey("vector_stores.id", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[str] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    """Deleting the file (Files API) detaches it from every store, chunks included."""
    project_id: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(64), default=None)
    filename: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    """``in_progress``, ``completed``, ``cancelled`` or ``failed``."""
    last_error: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    """``{"code": server_error|unsupported_file|invalid_file, "message": …}``."""
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    chunking_strategy: Mapped[dict[str, Any]] = mapped_column(JSON)
    usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_s)
    created_ns: Mapped[int] = mapped_column(BigInteger, default=now_ns)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped by every (re-)attach; an ingestion job only writes for its own generation."""


class ChunkRecord(Base):
    """One chunk of a vector store file, with its embedding: the source of truth for search."""

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("vector_store_id", "file_id", "ordinal", name="uq_chunks_position"),
        ForeignKeyConstraint(
            ["vector_store_id", "file_id"],
            ["vector_store_files.vector_store_id", "vector_store_files.file_id"],
            name="fk_chunks_vector_store_file",
            ondelete="CASCADE",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    vector_store_id: Mapped[str] = mapped_column(String(64))
    file_id: Mapped[str] = mapped_column(String(64))
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer)
    page: Mapped[int | None] = mapped_column(Integer, default=None)
    heading_path: Mapped[list[str]] = mapped_column(JSON, default=list)
    char_start: Mapped[int] = mapped_column(BigInteger)
    char_end: Mapped[int] = mapped_column(BigInteger)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    """float32 little-endian, L2-normalised."""
    embedding_model: Mapped[str] = mapped_column(String(256))


class FaqQuestionRecord(Base):
    """A question of a FAQ entry (its standard or a similar question) with its embedding.

    The entry itself is one chunk (``Q: …\nA: …``); its questions hang off that chunk and go
    with it (``ON DELETE CASCADE``). Embedded as queries: a user's question is matched against
    them symmetrically."""

    __tablename__ = "faq_questions"
    __table_args__ = (
        Index("ix_faq_questions_store", "vector_store_id"),
        Index("ix_faq_questions_chunk", "chunk_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chunk_id: Mapped[str] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"))
    vector_store_id: Mapped[str] = mapped_column(String(64))
    ordinal: Mapped[int] = mapped_column(Integer)
    """0: the standard question; 1…: the similar questions in file order."""
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    """float32 little-endian, L2-normalised (a ``query`` embedding)."""
