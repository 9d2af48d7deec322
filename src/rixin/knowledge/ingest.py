"""Ingesting a vector store file: the handler of the ``vector_store.file.ingest`` job.

One job per attach (its idempotency key names the store, the file and the attach
``generation``). The handler re-derives everything from the store, so running it again after a
crash (``kill -9`` at any point) is harmless:

1. read the vector store file; stop if it is gone, no longer ``in_progress``, or re-attached
   since (another generation owns it);
2. parse the file's blob in the sandboxed parser subprocess;
3. chunk it per the file's ``chunking_strategy`` (``auto``: structure-aware, 800/400 tokens;
   ``static``: OpenAI's fixed windows; a FAQ file: one chunk per entry, its questions embedded
   too, see ``rixin.knowledge.faq``);
4. embed the chunks in batches through the store's embedding model (its router: admission,
   failover);
5. in ONE transaction: check the generation again, delete the file's chunks, insert the new
   ones, mark the file ``completed`` and bump the store's ``chunks_version``;
6. bring the store's BM25/ANN indexes up to date (derived data: a crash here is repaired by the
   next ``StoreIndexes.open``).

A file that cannot be parsed ends ``failed`` with OpenAI's ``last_error`` (``unsupported_file``,
``invalid_file``); any other failure is retried by the queue and, on the last attempt, ends
``failed`` with ``server_error``. Either way other files are never blocked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.errors import ContextLengthExceeded
from rixin.jobs.worker import JobContext
from rixin.knowledge import faq
from rixin.knowledge.chunking import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_OVERLAP_TOKENS,
    Chunk,
    static_chunks,
    structured_chunks,
)
from rixin.knowledge.parsing import (
    FaqEntry,
    ParsedDocument,
    ParseError,
    last_error,
    parse_faq_async,
    parse_file_async,
)
from rixin.knowledge.store_index import StoreIndexes, encode_vector
from rixin.knowledge.tokens import token_spans
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records_files import FileRecord
from rixin.store.records_vectors import ChunkRecord, VectorStoreFileRecord, VectorStoreRecord

log = logging.getLogger("rixin.knowledge.ingest")

JOB_KIND = "vector_store.file.ingest"
MAX_ATTEMPTS = 5
EMBED_BATCH = 32
AUTO_WINDOW_SHARE = 0.8

Vector = np.ndarray[Any, np.dtype[np.float32]]
Embed = Callable[[str, Sequence[str]], Awaitable[np.ndarray[Any, np.dtype[np.float32]]]]
"""``embed(model_id, passages)`` → L2-normalised float32 vectors, one row per passage."""
BlobPath = Callable[[str], Path]
"""The on-disk path of a blob, from its sha256."""


def job_key(vector_store_id: str, file_id: str, generation: int) -> str:
    """The idempotency key of the ingestion job of one attach of a file."""
    return f"{vector_store_id}:{file_id}:{generation}"


def job_payload(vector_store_id: str, file_id: str, generation: int) -> dict[str, Any]:
    return {"vector_store_id": vector_store_id, "file_id": file_id, "generation": generation}


@dataclass(frozen=True)
class _Target:
    vector_store_id: str
    file_id: str
    generation: int
    project_id: str


class _Superseded(Exception):
    """The file was detached, cancelled or re-attached while this job worked on it."""


class Ingestor:
    """The ingestion job handler; ``await ingestor(ctx)`` runs one job."""

    def __init__(
        self,
        db: Database,
        *,
        blob_path: BlobPath,
        embed: Embed,
        indexes: StoreIndexes,
        embed_batch: int = EMBED_BATCH,
        embed_queries: Embed | None = None,
    ) -> None:
        self.db = db
        self.blob_path = blob_path
        self.embed = embed
        self.indexes = indexes
        self.embed_batch = embed_batch
        self.embed_queries = embed_queries or embed
        """Embeds a FAQ entry's questions (as queries: they are matched against queries)."""

    async def __call__(self, ctx: JobContext) -> dict[str, Any] | None:
        payload = ctx.job.payload
        target = _Target(
            str(payload["vector_store_id"]),
            str(payload["file_id"]),
            int(payload["generation"]),
            ctx.job.project_id,
        )
        last_attempt = ctx.job.attempts >= ctx.job.max_attempts
        try:
            return await self._ingest(ctx, target)
        except _Superseded:
            return {"skipped": "superseded"}
        except ParseError as exc:
            if exc.code == "timeout" and not last_attempt:
                raise  # may be load on the host: the queue retries after a back-off
            await self._fail(target, last_error(exc))
            return {"failed": exc.code}
        except Exception as exc:
            if not last_attempt:
                raise
            log.exception("ingestion of %s into %s failed", target.file_id, target.vector_store_id)
            message = "The file could not be processed; retry by attaching it again."
            await self._fail(target, {"code": "server_error", "message": message})
            return {"failed": type(exc).__name__}

    async def _ingest(self, ctx: JobContext, target: _Target) -> dict[str, Any]:
        file, model, strategy = await self._load(target)
        await ctx.progress({"stage": "parsing"})
        path = self.blob_path(file.sha256)
        entries: list[FaqEntry] | None = None
        if faq.is_faq(strategy):
            entries = await parse_faq_async(path, filename=file.filename)
            chunks = faq.faq_chunks(entries)
        else:
            document = await parse_file_async(path, filename=file.filename)
            chunks = chunk_document(document, strategy)
        if not chunks:
            message = "invalid_file: no text could be extracted from the file"
            await self._fail(target, {"code": "invalid_file", "message": message})
            return {"chunks": 0}
        vectors: list[Vector] = []
        for start in range(0, len(chunks), self.embed_batch):
            await ctx.progress({"stage": "embedding", "done": start, "total": len(chunks)})
            batch = [c.text for c in chunks[start : start + self.embed_batch]]
            vectors.extend(await self._embed(model, batch))
        questions = await self._embed_questions(model, entries) if entries else None
        await ctx.progress({"stage": "writing", "total": len(chunks)})
        await self._write(target, chunks, vectors, model, entries, questions)
        await self._refresh_index(target.vector_store_id)
        return {"chunks": len(chunks)}

    async def _embed(self, model: str, texts: Sequence[str]) -> list[Vector]:
        """One vector per text. A text longer than the model's input window is embedded in
        halves (recursively) and gets the length-weighted mean of their vectors, so no part
        of a chunk is silently cut off."""
        try:
            return list(np.asarray(await self.embed(model, texts), dtype=np.float32))
        except ContextLengthExceeded:
            if len(texts) > 1:
                return [vector for text in texts for vector in await self._embed(model, [text])]
            halves = split_in_half(texts[0])
            if len(halves) < 2:
                raise
        parts = [(await self._embed(model, [half]))[0] for half in halves]
        mean = sum(len(h) * v for h, v in zip(halves, parts, strict=True)) / len(texts[0])
        norm = float(np.linalg.norm(mean))
        return [np.asarray(mean / norm if norm > 0 else mean, dtype=np.float32)]

    async def _embed_questions(self, model: str, entries: Sequence[FaqEntry]) -> list[Vector]:
        texts = faq.all_questions(entries)
        vectors: list[Vector] = []
        for start in range(0, len(texts), self.embed_batch):
            batch = texts[start : start + self.embed_batch]
            vectors.extend(np.asarray(await self.embed_queries(model, batch), dtype=np.float32))
        return vectors

    async def _load(self, target: _Target) -> tuple[FileRecord, str, dict[str, Any]]:
        async with self.db.session(readonly=True) as session:
            row = await _current(session, target)
            store = await session.get(VectorStoreRecord, target.vector_store_id)
            file = await session.get(FileRecord, target.file_id)
        if store is None:
            raise _Superseded
        if file is None or file.project_id != target.project_id:
            raise ParseError("corrupt", "the file no longer exists")
        return file, store.embedding_model, dict(row.chunking_strategy or {})

    async def _write(
        self,
        target: _Target,
        chunks: Sequence[Chunk],
        vectors: Sequence[Vector],
        model: str,
        entries: Sequence[FaqEntry] | None = None,
        questions: Sequence[Vector] | None = None,
    ) -> None:
        records = [
            ChunkRecord(
                id=new_id("chunk"),
                project_id=target.project_id,
                vector_store_id=target.vector_store_id,
                file_id=target.file_id,
                ordinal=chunk.ordinal,
                text=chunk.text,
                token_count=chunk.token_count,
                page=chunk.page,
                heading_path=list(chunk.heading_path),
                char_start=chunk.char_start,
                char_end=chunk.char_end,
                embedding=encode_vector(vector),
                embedding_model=model,
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        usage = sum(len(r.text.encode("utf-8")) + len(r.embedding) for r in records)
        async with self.db.session() as session:
            row = await _current(session, target, lock=True)
            await _delete_chunks(session, target)
            session.add_all(records)
            if entries is not None and questions is not None:
                await session.flush()  # the questions reference their chunks
                extra = faq.question_records(records, entries, questions)
                session.add_all(extra)
                usage += sum(len(q.text.encode("utf-8")) + len(q.embedding) for q in extra)
            row.status, row.last_error, row.usage_bytes = "completed", None, usage
            await _bump_version(session, target.vector_store_id)

    async def _fail(self, target: _Target, error: dict[str, str]) -> None:
        """Mark the file ``failed`` (only if this job's generation still owns it)."""
        try:
            async with self.db.session() as session:
                row = await _current(session, target, lock=True)
                had_chunks = await _delete_chunks(session, target)
                row.status, row.last_error, row.usage_bytes = "failed", error, 0
                if had_chunks:
                    await _bump_version(session, target.vector_store_id)
        except _Superseded:
            return
        await self._refresh_index(target.vector_store_id)

    async def _refresh_index(self, vector_store_id: str) -> None:
        self.indexes.refresh_soon(vector_store_id)


def chunk_document(document: ParsedDocument, strategy: dict[str, Any]) -> list[Chunk]:
    """The chunks of a document under a stored ``chunking_strategy``: ``static`` windows, or
    structure-aware chunks for ``auto`` (sized by the ``static`` block stored with it)."""
    sizes = strategy.get("static") or {}
    size = int(sizes.get("max_chunk_size_tokens", DEFAULT_MAX_TOKENS))
    overlap = int(sizes.get("chunk_overlap_tokens", DEFAULT_OVERLAP_TOKENS))
    if strategy.get("type") == "static":
        return static_chunks(document, size, overlap)
    return structured_chunks(document, size, overlap)


def auto_sizes(context_window: int | None) -> tuple[int, int]:
    """``auto`` chunk size and overlap for an embedder: OpenAI's 800/400, shrunk to fit a
    smaller input window (with a margin: our token counts approximate the model's)."""
    size = DEFAULT_MAX_TOKENS
    if context_window:
        size = max(100, min(size, int(context_window * AUTO_WINDOW_SHARE)))
    return size, size * DEFAULT_OVERLAP_TOKENS // DEFAULT_MAX_TOKENS


def split_in_half(text: str) -> list[str]:
    """Two pieces of ``text`` cut at the token edge nearest its middle (one piece if it is a
    single token)."""
    spans = token_spans(text)
    if len(spans) < 2:
        return [text]
    cut = spans[len(spans) // 2][0]
    return [text[:cut], text[cut:]]


async def _current(
    session: AsyncSession, target: _Target, *, lock: bool = False
) -> VectorStoreFileRecord:
    query = select(VectorStoreFileRecord).where(
        VectorStoreFileRecord.vector_store_id == target.vector_store_id,
        VectorStoreFileRecord.file_id == target.file_id,
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = await session.scalar(query.execution_options(populate_existing=True))
    if row is None or row.generation != target.generation or row.status != "in_progress":
        raise _Superseded
    return row


async def _delete_chunks(session: AsyncSession, target: _Target) -> bool:
    result = await session.execute(
        delete(ChunkRecord).where(
            ChunkRecord.vector_store_id == target.vector_store_id,
            ChunkRecord.file_id == target.file_id,
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def _bump_version(session: AsyncSession, vector_store_id: str) -> None:
    await session.execute(
        update(VectorStoreRecord)
        .where(VectorStoreRecord.id == vector_store_id)
        .values(chunks_version=VectorStoreRecord.chunks_version + 1)
    )
