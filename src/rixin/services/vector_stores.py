"""Vector stores: CRUD, files attached by reference, file batches, hybrid search and expiry.

Every call is scoped to the caller's project: another project's store, batch or file is
``NotFound`` (no existence leak), including a file referenced inside a create/attach body (A1).
Search reads only the store's own indexes and re-reads every hit from the chunks table under
the caller's project and store before returning it (A2).

Attaching a file inserts its ``vector_store_files`` row and its ingestion job in the same
transaction (``rixin.knowledge.ingest``), so an acknowledged file always has a job; a periodic
``recover`` pass also re-enqueues any ``in_progress`` file without a live job and fails those
whose job was given up (a worker lost on its last attempt), so every file ends ``completed``,
``failed`` or ``cancelled``.

Re-attaching a file that is already in the store re-ingests it (a new ``generation``): its
chunks are replaced, never duplicated.

A store created with ``rixin.external`` is backed by a Dify-style External Knowledge API
(``rixin.knowledge.external``): it holds no files and its search is forwarded there.

A file attached with ``rixin.format = "faq"`` is a FAQ knowledge base; its entries matched above
the store's ``rixin.faq_threshold`` lead the search results (``rixin.knowledge.faq``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from rixin.engines.base import Capabilities, EmbeddingResult, RerankResult
from rixin.errors import InvalidRequest, ModelUnavailable, NotFound, RixinError
from rixin.jobs.queue import JobQueue
from rixin.knowledge import faq
from rixin.knowledge.chunking import DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP_TOKENS, validate_static
from rixin.knowledge.external import ExternalKnowledgeClient, ExternalSource
from rixin.knowledge.filters import Filter, matches, parse_filter
from rixin.knowledge.index.hybrid import Hit, HybridSearcher, SearchOptions
from rixin.knowledge.ingest import (
    JOB_KIND,
    MAX_ATTEMPTS,
    Ingestor,
    auto_sizes,
    job_key,
    job_payload,
)
from rixin.knowledge.store_index import StoreIndexes
from rixin.schemas.vector_stores import (
    CreateVectorStoreFileBatchRequest,
    CreateVectorStoreRequest,
    FileCounts,
    IngestionProgress,
    LastError,
    OtherChunkingStrategyResponseParam,
    RixinVectorStoreFileOptions,
    StaticChunkingStrategy,
    StaticChunkingStrategyResponseParam,
    UpdateVectorStoreRequest,
    VectorStoreExpirationAfter,
    VectorStoreFileBatchObject,
    VectorStoreFileContent,
    VectorStoreFileContentResponse,
    VectorStoreFileObject,
    VectorStoreFileRixin,
    VectorStoreObject,
    VectorStoreRixin,
    VectorStoreSearchRequest,
    VectorStoreSearchResultContentObject,
    VectorStoreSearchResultItem,
    VectorStoreSearchResultsPage,
)
from rixin.services.models import ModelManager
from rixin.store.blobs import BlobStore
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records import now_s
from rixin.store.records_files import FileRecord, JobRecord
from rixin.store.records_vectors import (
    ChunkRecord,
    VectorStoreFileBatchRecord,
    VectorStoreFileRecord,
    VectorStoreRecord,
)

log = logging.getLogger("rixin.vector_stores")

INGEST_JOB = JOB_KIND

DEFAULT_EMBEDDING_MODEL = "multilingual-e5-small"
EXTERNAL_MODEL = "external"
"""The ``embedding_model`` of a store searched at an external knowledge endpoint."""
PREFERRED_RERANK_MODEL = "rixin-llm-rerank"
DAY_S = 86_400
ACTIVE_WRITE_INTERVAL_S = 60
"""``last_active_at`` is written at most this often per store (searches are reads)."""
RECOVER_INTERVAL_S = 5.0
GIVEN_UP = {
    "code": "server_error",
    "message": "The file could not be processed; attach it again to retry.",
}
MAX_KEYS, MAX_KEY_CHARS, MAX_VALUE_CHARS = 16, 64, 512

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class Page:
    items: list[Any]
    has_more: bool


@dataclass(frozen=True)
class Ranker:
    """What a ``ranking_options.ranker`` name means here."""

    options: SearchOptions
    rerank: Literal["never", "if_available", "required"] = "never"


RANKERS: dict[str, Ranker] = {
    "auto": Ranker(SearchOptions(mode="hybrid", fusion="rrf")),
    "none": Ranker(SearchOptions(mode="hybrid", fusion="rrf")),
    "default-2024-11-15": Ranker(SearchOptions(mode="hybrid"), "if_available"),
    "hybrid": Ranker(SearchOptions(mode="hybrid", fusion="rrf")),
    "hybrid_convex": Ranker(SearchOptions(mode="hybrid", fusion="convex")),
    "hybrid_rerank": Ranker(SearchOptions(mode="hybrid"), "required"),
    "dense": Ranker(SearchOptions(mode="dense")),
    "bm25": Ranker(SearchOptions(mode="sparse")),
}
"""OpenAI's rankers plus rixin's: ``auto``/``none``/``hybrid`` = BM25 + dense fused by RRF (the
best measured without a reranker); ``default-2024-11-15`` adds the reranker when one is served;
``hybrid_rerank`` insists on one; ``dense`` and ``bm25`` run one retriever alone."""


class VectorStoreService:
    def __init__(
        self,
        db: Database,
        models: ModelManager,
        queue: JobQueue,
        blobs: BlobStore,
        indexes: StoreIndexes,
        external: ExternalKnowledgeClient | None = None,
    ) -> None:
        self.db = db
        self.models = models
        self.queue = queue
        self.indexes = indexes
        self.ingest = Ingestor(
            db,
            blob_path=blobs.path,
            embed=functools.partial(embed_passages, models),
            indexes=indexes,
            embed_queries=functools.partial(embed_passages, models, input_type="query"),
        )
        """The handler of ``INGEST_JOB`` jobs; register it with the worker pool."""
        self._recover_task: asyncio.Task[None] | None = None
        self.external = external
        """Searches stores backed by an external knowledge endpoint; None: none allowed."""
        self.faq = faq.FaqIndexes(db)

    # ------------------------------------------------------------------------ vector stores

    async def create(self, project_id: str, req: CreateVectorStoreRequest) -> VectorStoreObject:
        source = await self._external_source(req)
        model = (
            EXTERNAL_MODEL
            if source
            else self._embedding_model(req.rixin.embedding_model if req.rixin else None)
        )
        strategy = chunking_strategy(req.chunking_strategy)
        metadata = check_metadata(req.metadata)
        file_ids = list(dict.fromkeys(req.file_ids or []))
        now = now_s()
        store = VectorStoreRecord(
            id=new_id("vs"),
            project_id=project_id,
            name=req.name or "",
            description=req.description,
            created_at=now,
            last_active_at=now,
            expires_after_days=req.expires_after.days if req.expires_after else None,
            metadata_=metadata,
            embedding_model=model,
            chunks_version=0,
            external=source.to_record() if source else None,
            faq_threshold=req.rixin.faq_threshold if req.rixin else None,
        )
        async with self.db.session() as session:
            files = await _project_files(session, project_id, file_ids, "file_ids")
            session.add(store)
            await session.flush()
            for file in files:
                await self._attach(session, store, file, strategy, None, None)
        return await self.retrieve(project_id, store.id)

    async def retrieve(self, project_id: str, vector_store_id: str) -> VectorStoreObject:
        async with self.db.session(readonly=True) as session:
            store = await _store(session, project_id, vector_store_id)
            return (await self._views(session, [store]))[0]

    async def update(
        self, project_id: str, vector_store_id: str, req: UpdateVectorStoreRequest
    ) -> VectorStoreObject:
        fields = req.model_fields_set
        async with self.db.session() as session:
            store = await _store(session, project_id, vector_store_id)
            if "name" in fields:
                store.name = req.name or ""
            if "expires_after" in fields:
                days = req.expires_after.days if req.expires_after else None
                store.expires_after_days = days
                store.last_active_at = now_s()
            if "metadata" in fields:
                store.metadata_ = check_metadata(req.metadata)
            if req.rixin is not None and "faq_threshold" in req.rixin.model_fields_set:
                store.faq_threshold = req.rixin.faq_threshold
        return await self.retrieve(project_id, vector_store_id)

    async def list_stores(
        self,
        project_id: str,
        *,
        limit: int = 20,
        order: Order = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> Page:
        async with self.db.session(readonly=True) as session:
            query = select(VectorStoreRecord).where(VectorStoreRecord.project_id == project_id)
            cursors = {
                name: await _store(session, project_id, value, param=name)
                for name, value in (("after", after), ("before", before))
                if value is not None
            }
            page = await _paginate(
                session,
                query,
                (VectorStoreRecord.created_ns, VectorStoreRecord.id),
                lambda s: (s.created_ns, s.id),
                order,
                limit,
                cursors,
            )
            return Page(await self._views(session, page.items), page.has_more)

    async def delete(self, project_id: str, vector_store_id: str) -> str:
        async with self.db.session() as session:
            store = await _store(session, project_id, vector_store_id)
            await session.delete(store)
        await self.indexes.drop(vector_store_id)
        self.faq.drop(vector_store_id)
        return vector_store_id

    # --------------------------------------------------------------------------------- files

    async def add_file(
        self,
        project_id: str,
        vector_store_id: str,
        file_id: str,
        *,
        chunking: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        rixin: RixinVectorStoreFileOptions | None = None,
    ) -> VectorStoreFileObject:
        strategy = file_strategy(chunking, rixin)
        attrs = check_attributes(attributes)
        async with self.db.session() as session:
            store = await _store(session, project_id, vector_store_id)
            (file,) = await _project_files(session, project_id, [file_id], "file_id")
            row = await self._attach(session, store, file, strategy, attrs, None)
            return file_view(row)

    async def retrieve_file(
        self, project_id: str, vector_store_id: str, file_id: str
    ) -> VectorStoreFileObject:
        async with self.db.session(readonly=True) as session:
            row = await _store_file(session, project_id, vector_store_id, file_id)
            progress = await _progress(session, [row])
            return file_view(row, progress.get(row.file_id))

    async def list_files(
        self,
        project_id: str,
        vector_store_id: str,
        *,
        batch_id: str | None = None,
        status: str | None = None,
        limit: int = 20,
        order: Order = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> Page:
        async with self.db.session(readonly=True) as session:
            await _store(session, project_id, vector_store_id)
            query = select(VectorStoreFileRecord).where(
                VectorStoreFileRecord.vector_store_id == vector_store_id
            )
            if batch_id is not None:
                await _batch(session, project_id, vector_store_id, batch_id)
                query = query.where(VectorStoreFileRecord.batch_id == batch_id)
            if status is not None:
                query = query.where(VectorStoreFileRecord.status == status)
            cursors = {
                name: await _store_file(session, project_id, vector_store_id, value, param=name)
                for name, value in (("after", after), ("before", before))
                if value is not None
            }
            page = await _paginate(
                session,
                query,
                (VectorStoreFileRecord.created_ns, VectorStoreFileRecord.file_id),
                lambda f: (f.created_ns, f.file_id),
                order,
                limit,
                cursors,
            )
            progress = await _progress(session, page.items)
            views = [file_view(row, progress.get(row.file_id)) for row in page.items]
            return Page(views, page.has_more)

    async def update_file(
        self,
        project_id: str,
        vector_store_id: str,
        file_id: str,
        attributes: dict[str, Any] | None,
    ) -> VectorStoreFileObject:
        attrs = check_attributes(attributes)
        async with self.db.session() as session:
            row = await _store_file(session, project_id, vector_store_id, file_id)
            row.attributes = attrs
            return file_view(row)

    async def delete_file(self, project_id: str, vector_store_id: str, file_id: str) -> str:
        async with self.db.session() as session:
            row = await _store_file(session, project_id, vector_store_id, file_id)
            await session.delete(row)  # its chunks go with it (ON DELETE CASCADE)
            await _bump_version(session, vector_store_id)
        await self._refresh_index(vector_store_id)
        return file_id

    async def file_content(
        self, project_id: str, vector_store_id: str, file_id: str
    ) -> VectorStoreFileContentResponse:
        """The parsed text of a file, one entry per chunk without the overlaps."""
        async with self.db.session(readonly=True) as session:
            await _store_file(session, project_id, vector_store_id, file_id)
            rows = await session.execute(
                select(ChunkRecord.text, ChunkRecord.char_start, ChunkRecord.char_end)
                .where(
                    ChunkRecord.vector_store_id == vector_store_id,
                    ChunkRecord.file_id == file_id,
                    ChunkRecord.project_id == project_id,
                )
                .order_by(ChunkRecord.ordinal)
            )
            data: list[VectorStoreFileContent] = []
            end = 0
            for text, start, stop in rows:
                piece = text[max(0, end - start) :]
                end = max(end, stop)
                if piece.strip():
                    data.append(VectorStoreFileContent(text=piece))
        return VectorStoreFileContentResponse(data=data)

    # ------------------------------------------------------------------------------- batches

    async def create_batch(
        self, project_id: str, vector_store_id: str, req: CreateVectorStoreFileBatchRequest
    ) -> VectorStoreFileBatchObject:
        if (req.file_ids is None) == (req.files is None):
            raise InvalidRequest("Provide exactly one of 'file_ids' and 'files'.", param="file_ids")
        entries: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        if req.file_ids is not None:
            strategy = file_strategy(req.chunking_strategy, req.rixin)
            attrs = check_attributes(req.attributes)
            entries = [(file_id, strategy, attrs) for file_id in req.file_ids]
        else:
            for i, item in enumerate(req.files or []):
                param = f"files[{i}]"
                entries.append(
                    (
                        item.file_id,
                        file_strategy(
                            item.chunking_strategy,
                            item.rixin or req.rixin,
                            f"{param}.chunking_strategy",
                        ),
                        check_attributes(item.attributes, f"{param}.attributes"),
                    )
                )
        unique = list({file_id: (file_id, s, a) for file_id, s, a in entries}.values())
        async with self.db.session() as session:
            store = await _store(session, project_id, vector_store_id)
            files = await _project_files(session, project_id, [e[0] for e in unique], "file_ids")
            batch = VectorStoreFileBatchRecord(
                id=new_id("vsfb"),
                project_id=project_id,
                vector_store_id=vector_store_id,
                created_at=now_s(),
            )
            session.add(batch)
            await session.flush()
            for file, (_, strategy, attrs) in zip(files, unique, strict=True):
                await self._attach(session, store, file, strategy, attrs, batch.id)
            return await _batch_view(session, batch)

    async def retrieve_batch(
        self, project_id: str, vector_store_id: str, batch_id: str
    ) -> VectorStoreFileBatchObject:
        async with self.db.session(readonly=True) as session:
            batch = await _batch(session, project_id, vector_store_id, batch_id)
            return await _batch_view(session, batch)

    async def cancel_batch(
        self, project_id: str, vector_store_id: str, batch_id: str
    ) -> VectorStoreFileBatchObject:
        """Cancel the batch's files still in progress (a running ingestion discards its work)."""
        async with self.db.session() as session:
            batch = await _batch(session, project_id, vector_store_id, batch_id)
            result = await session.execute(
                update(VectorStoreFileRecord)
                .where(
                    VectorStoreFileRecord.batch_id == batch_id,
                    VectorStoreFileRecord.status == "in_progress",
                )
                .values(status="cancelled")
            )
            if getattr(result, "rowcount", 0) and batch.cancelled_at is None:
                batch.cancelled_at = now_s()
            await session.flush()
            return await _batch_view(session, batch)

    # -------------------------------------------------------------------------------- search

    async def search(
        self, project_id: str, vector_store_id: str, req: VectorStoreSearchRequest
    ) -> VectorStoreSearchResultsPage:
        queries = [req.query] if isinstance(req.query, str) else list(req.query)
        if not any(q.strip() for q in queries):
            raise InvalidRequest("'query' must not be empty.", param="query")
        ranking = req.ranking_options
        ranker = _ranker(ranking.ranker if ranking else "auto")
        threshold = ranking.score_threshold if ranking else 0.0
        flt = parse_filter(req.filters) if req.filters is not None else None
        async with self.db.session(readonly=True) as session:
            store = await _store(session, project_id, vector_store_id)
            if _status(store, in_progress=False) == "expired":
                raise InvalidRequest(
                    f"Vector store '{vector_store_id}' has expired.", code="vector_store_expired"
                )
            external = store.external is not None
            allowed = (
                await _allowed_chunks(session, store.id, flt) if flt and not external else None
            )
        await self._touch(store)
        if store.external is not None:
            source = ExternalSource.from_record(store.external)
            items = await self._require_external().search(source, req)
            return VectorStoreSearchResultsPage(search_query=queries, data=items)
        if allowed is not None and not allowed:
            return VectorStoreSearchResultsPage(search_query=queries, data=[])
        items = await self._search(project_id, store, queries, ranker, req, allowed)
        items = [item for item in items if item.score >= threshold]
        return VectorStoreSearchResultsPage(search_query=queries, data=items)

    async def _search(
        self,
        project_id: str,
        store: VectorStoreRecord,
        queries: Sequence[str],
        ranker: Ranker,
        req: VectorStoreSearchRequest,
        allowed: Collection[str] | None,
    ) -> list[VectorStoreSearchResultItem]:
        k = req.max_num_results
        options = ranker.options
        embedder = _RoutedEmbedder(self.models, store.embedding_model)
        questions = await self.faq.open(store.id, store.chunks_version)
        vectors = None
        if questions.size:  # the queries' embeddings serve the FAQ match and the dense search
            vectors = (await embedder.embed(queries, input_type="query")).vectors
        found = []
        if vectors is not None:
            found = questions.match(vectors, faq.threshold(store.faq_threshold), allowed)
        for attempt in range(2):
            index = await self.indexes.open(store.id, store.chunks_version)
            searcher = HybridSearcher(
                sparse=index.sparse,
                dense=index.dense,
                embedder=embedder if index.dense is not None else None,
                reranker=self._reranker(ranker),
                fetch_texts=lambda ids: self._texts(project_id, store.id, ids),
                options=options,
            )
            best: dict[str, float] = {}
            for i, query in enumerate(queries):
                vector = vectors[i] if vectors is not None else None
                hits = await searcher.search(query, k, allowed_ids=allowed, query_vector=vector)
                for hit in hits:
                    score = _unit_score(hit, options.mode, searcher.reranker is not None)
                    best[hit.chunk_id] = max(best.get(hit.chunk_id, 0.0), score)
            if options.mode == "sparse" and best:
                top = max(best.values())
                best = {c: s / top if top > 0 else 0.0 for c, s in best.items()}
            ranked = faq.merge(found, sorted(best.items(), key=lambda cs: (-cs[1], cs[0])), k)
            items, missing = await self._items(project_id, store.id, ranked, found)
            if not missing or attempt:
                return items
            await self.indexes.refresh(store.id)  # the index held chunks that are gone
        return []  # pragma: no cover - the loop always returns

    async def _items(
        self,
        project_id: str,
        vector_store_id: str,
        ranked: Sequence[tuple[str, float]],
        found: Sequence[faq.FaqMatch] = (),
    ) -> tuple[list[VectorStoreSearchResultItem], bool]:
        if not ranked:
            return [], False
        async with self.db.session(readonly=True) as session:
            rows = await session.execute(
                select(ChunkRecord.id, ChunkRecord.text, VectorStoreFileRecord)
                .join(
                    VectorStoreFileRecord,
                    and_(
                        VectorStoreFileRecord.vector_store_id == ChunkRecord.vector_store_id,
                        VectorStoreFileRecord.file_id == ChunkRecord.file_id,
                    ),
                )
                .where(
                    ChunkRecord.id.in_([chunk_id for chunk_id, _ in ranked]),
                    ChunkRecord.project_id == project_id,
                    ChunkRecord.vector_store_id == vector_store_id,
                    VectorStoreFileRecord.project_id == project_id,
                    VectorStoreFileRecord.status == "completed",
                )
            )
            chunks = {chunk_id: (text, row) for chunk_id, text, row in rows}
        matched = {m.chunk_id: m for m in found}
        items = [
            VectorStoreSearchResultItem(
                file_id=chunks[chunk_id][1].file_id,
                filename=chunks[chunk_id][1].filename,
                score=round(min(1.0, max(0.0, score)), 6),
                attributes=faq.hit_attributes(chunks[chunk_id][1].attributes, matched[chunk_id])
                if chunk_id in matched
                else chunks[chunk_id][1].attributes,
                content=[VectorStoreSearchResultContentObject(text=chunks[chunk_id][0])],
            )
            for chunk_id, score in ranked
            if chunk_id in chunks
        ]
        return items, len(chunks) < len(ranked)

    async def _texts(self, project_id: str, vector_store_id: str, ids: Sequence[str]) -> list[str]:
        async with self.db.session(readonly=True) as session:
            rows = await session.execute(
                select(ChunkRecord.id, ChunkRecord.text).where(
                    ChunkRecord.id.in_(list(ids)),
                    ChunkRecord.project_id == project_id,
                    ChunkRecord.vector_store_id == vector_store_id,
                )
            )
            texts = {str(chunk_id): str(text) for chunk_id, text in rows}
        return [texts.get(chunk_id, "") for chunk_id in ids]

    def _reranker(self, ranker: Ranker) -> _RoutedReranker | None:
        if ranker.rerank == "never":
            return None
        served = [m for m in self.models.all() if m.kind == "rerank" and m.router is not None]
        served.sort(key=lambda m: m.id != PREFERRED_RERANK_MODEL)
        if served:
            return _RoutedReranker(self.models, served[0].id)
        if ranker.rerank == "required":
            raise ModelUnavailable("No rerank model is served; 'hybrid_rerank' needs one.")
        return None

    async def _touch(self, store: VectorStoreRecord) -> None:
        if now_s() - store.last_active_at < ACTIVE_WRITE_INTERVAL_S:
            return
        async with self.db.session() as session:
            await session.execute(
                update(VectorStoreRecord)
                .where(VectorStoreRecord.id == store.id)
                .values(last_active_at=now_s())
            )

    # ------------------------------------------------------------------------------ recovery

    async def start(self, interval_s: float = RECOVER_INTERVAL_S) -> None:
        """Run ``recover`` now and then every ``interval_s`` until ``aclose``."""
        if self._recover_task is None:
            self._recover_task = asyncio.create_task(self._recover_loop(interval_s))

    async def aclose(self) -> None:
        task, self._recover_task = self._recover_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.indexes.settle()  # a refresh half-way through a thread must not lose its db
        self.indexes.close()

    async def _recover_loop(self, interval_s: float) -> None:
        while True:
            try:
                await self.recover()
            except RixinError as exc:
                log.warning("vector store recovery pass failed: %s", exc.message)
            except Exception:
                log.exception("vector store recovery pass failed")
            await asyncio.sleep(interval_s)

    async def recover(self) -> int:
        """Give every ``in_progress`` file a live job, or end it ``failed`` when its job was
        given up; returns how many files were repaired. Reads first; writes only to repair."""
        async with self.db.session(readonly=True) as session:
            stuck = await _stuck_files(session)
        if not stuck:
            return 0
        repaired = 0
        async with self.db.session() as session:
            for (vs_id, file_id), state in stuck.items():
                row = await session.get(VectorStoreFileRecord, (vs_id, file_id))
                if row is None or row.status != "in_progress":
                    continue
                if state is None:
                    await self._enqueue(session, row)
                else:
                    row.status, row.last_error = "failed", dict(GIVEN_UP)
                repaired += 1
        return repaired

    # ------------------------------------------------------------------------------- helpers

    async def _external_source(self, req: CreateVectorStoreRequest) -> ExternalSource | None:
        param = req.rixin.external if req.rixin else None
        if param is None:
            return None
        if req.file_ids:
            raise InvalidRequest(
                "A vector store backed by an external knowledge endpoint holds no files.",
                param="file_ids",
            )
        return await self._require_external().source(param)

    def _require_external(self) -> ExternalKnowledgeClient:
        if self.external is None:
            raise InvalidRequest(
                "External knowledge sources are not enabled on this server.",
                param="rixin.external",
            )
        return self.external

    def _embedding_model(self, requested: str | None) -> str:
        if requested is not None:
            try:
                self.models.get(requested, "embedding")
            except RixinError as exc:
                exc.param = "rixin.embedding_model"
                raise
            return requested
        served = [m.id for m in self.models.all() if m.kind == "embedding"]
        if DEFAULT_EMBEDDING_MODEL in served:
            return DEFAULT_EMBEDDING_MODEL
        if not served:
            raise ModelUnavailable("No embedding model is served; vector stores need one.")
        return served[0]

    async def _attach(
        self,
        session: AsyncSession,
        store: VectorStoreRecord,
        file: FileRecord,
        strategy: dict[str, Any],
        attributes: dict[str, Any] | None,
        batch_id: str | None,
    ) -> VectorStoreFileRecord:
        if store.external is not None:
            raise InvalidRequest(
                f"Vector store '{store.id}' is backed by an external knowledge endpoint; "
                "files cannot be added to it."
            )
        row = await session.get(VectorStoreFileRecord, (store.id, file.id))
        if row is None:
            row = VectorStoreFileRecord(
                vector_store_id=store.id,
                file_id=file.id,
                project_id=store.project_id,
                filename=file.filename,
                created_at=now_s(),
                generation=1,
                usage_bytes=0,
            )
            session.add(row)
        else:
            row.generation += 1
        row.batch_id = batch_id
        row.status, row.last_error = "in_progress", None
        row.chunking_strategy = self._effective(store, strategy)
        if attributes is not None or row.attributes is None:
            row.attributes = attributes
        await session.flush()
        await self._enqueue(session, row)
        return row

    def _effective(self, store: VectorStoreRecord, strategy: dict[str, Any]) -> dict[str, Any]:
        """``auto`` resolved to the chunk sizes this store's embedding model can take."""
        if strategy.get("type") != "auto":
            return strategy
        served = self.models.find(store.embedding_model)
        window = served.capabilities.context_window if served is not None else None
        size, overlap = auto_sizes(window)
        return {
            "type": "auto",
            "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap},
        }

    async def _enqueue(self, session: AsyncSession, row: VectorStoreFileRecord) -> None:
        await self.queue.enqueue(
            row.project_id,
            JOB_KIND,
            job_payload(row.vector_store_id, row.file_id, row.generation),
            idempotency_key=job_key(row.vector_store_id, row.file_id, row.generation),
            max_attempts=MAX_ATTEMPTS,
            session=session,
        )

    async def _refresh_index(self, vector_store_id: str) -> None:
        try:
            await self.indexes.refresh(vector_store_id)
        except Exception:
            log.exception("index of %s not updated; it catches up on next use", vector_store_id)

    async def _views(
        self, session: AsyncSession, stores: Sequence[VectorStoreRecord]
    ) -> list[VectorStoreObject]:
        ids = [s.id for s in stores]
        counts: dict[str, FileCounts] = {i: FileCounts() for i in ids}
        usage: dict[str, int] = dict.fromkeys(ids, 0)
        chunks: dict[str, int] = dict.fromkeys(ids, 0)
        if ids:
            rows = await session.execute(
                select(
                    VectorStoreFileRecord.vector_store_id,
                    VectorStoreFileRecord.status,
                    func.count(),
                    func.coalesce(func.sum(VectorStoreFileRecord.usage_bytes), 0),
                )
                .where(VectorStoreFileRecord.vector_store_id.in_(ids))
                .group_by(VectorStoreFileRecord.vector_store_id, VectorStoreFileRecord.status)
            )
            for vs_id, status, count, used in rows:
                _add_count(counts[vs_id], status, int(count))
                usage[vs_id] += int(used)
            chunk_rows = await session.execute(
                select(ChunkRecord.vector_store_id, func.count())
                .where(ChunkRecord.vector_store_id.in_(ids))
                .group_by(ChunkRecord.vector_store_id)
            )
            chunks.update({vs_id: int(n) for vs_id, n in chunk_rows})
        return [store_view(s, counts[s.id], usage[s.id], chunks[s.id]) for s in stores]


# --- adapters: the store's models seen through their routers -----------------------------------


class _RoutedEmbedder:
    """The ``EmbeddingModel`` a ``HybridSearcher`` needs, over the model's router."""

    def __init__(self, models: ModelManager, model_id: str) -> None:
        self.name = model_id
        self._models = models
        self.capabilities = Capabilities()

    async def embed(self, texts: Sequence[str], *, input_type: str = "passage") -> EmbeddingResult:
        router = self._models.get(self.name, "embedding").require_router()
        routed = await router.call(lambda b: b.embed(list(texts), input_type=input_type))
        result: EmbeddingResult = routed.value
        return result

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class _RoutedReranker:
    def __init__(self, models: ModelManager, model_id: str) -> None:
        self.name = model_id
        self._models = models
        self.capabilities = Capabilities()

    async def rerank(self, query: str, documents: Sequence[str]) -> RerankResult:
        router = self._models.get(self.name, "rerank").require_router()
        routed = await router.call(lambda b: b.rerank(query, list(documents)))
        result: RerankResult = routed.value
        return result

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


async def embed_passages(
    models: ModelManager, model_id: str, texts: Sequence[str], *, input_type: str = "passage"
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Passage embeddings through the model's router (the ingestion job's ``embed``)."""
    result = await _RoutedEmbedder(models, model_id).embed(texts, input_type=input_type)
    return np.asarray(result.vectors, dtype=np.float32)


# --- validation ---------------------------------------------------------------------------------


def chunking_strategy(
    value: dict[str, Any] | None, param: str = "chunking_strategy"
) -> dict[str, Any]:
    """The strategy to store: ``{"type": "auto"}`` or a checked ``static`` one."""
    if value is None:
        return {"type": "auto"}
    kind = value.get("type")
    if kind == "auto":
        return {"type": "auto"}
    if kind != "static":
        raise InvalidRequest("'type' must be 'auto' or 'static'.", param=f"{param}.type")
    static = value.get("static")
    if not isinstance(static, dict):
        raise InvalidRequest("Missing required parameter: 'static'.", param=f"{param}.static")
    for name in ("max_chunk_size_tokens", "chunk_overlap_tokens"):
        if name not in static:
            raise InvalidRequest(
                f"Missing required parameter: '{name}'.", param=f"{param}.static.{name}"
            )
    size, overlap = static["max_chunk_size_tokens"], static["chunk_overlap_tokens"]
    try:
        validate_static(size, overlap)
    except InvalidRequest as exc:
        exc.param = (exc.param or "chunking_strategy").replace("chunking_strategy", param, 1)
        raise
    return {
        "type": "static",
        "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap},
    }


def file_strategy(
    value: dict[str, Any] | None,
    options: RixinVectorStoreFileOptions | None,
    param: str = "chunking_strategy",
) -> dict[str, Any]:
    """The strategy to store for a file attached with ``options`` (``rixin.format``)."""
    if options is None or options.format != faq.FAQ_FORMAT:
        return chunking_strategy(value, param)
    if value is not None and value.get("type") != "auto":
        raise InvalidRequest(
            "A FAQ file is not chunked by size (each entry is one chunk); "
            "leave out 'chunking_strategy' or use 'auto'.",
            param=param,
        )
    return dict(faq.FAQ_STRATEGY)


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    _check_map(value, "metadata")
    for key, item in value.items():
        if not isinstance(item, str) or len(item) > MAX_VALUE_CHARS:
            raise InvalidRequest(
                f"Metadata values must be strings of at most {MAX_VALUE_CHARS} characters.",
                param=f"metadata.{key}",
            )
    return dict(value)


def check_attributes(
    value: dict[str, Any] | None, param: str = "attributes"
) -> dict[str, Any] | None:
    if value is None:
        return None
    _check_map(value, param)
    for key, item in value.items():
        ok = isinstance(item, bool | int | float) or (
            isinstance(item, str) and len(item) <= MAX_VALUE_CHARS
        )
        if not ok or (isinstance(item, float) and not math.isfinite(item)):
            raise InvalidRequest(
                "Attribute values must be strings (at most 512 characters), numbers or booleans.",
                param=f"{param}.{key}",
            )
    return dict(value)


def _check_map(value: dict[str, Any], param: str) -> None:
    if len(value) > MAX_KEYS:
        raise InvalidRequest(f"'{param}' holds at most {MAX_KEYS} keys.", param=param)
    for key in value:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            raise InvalidRequest(
                f"Keys of '{param}' must be 1 to {MAX_KEY_CHARS} characters.", param=param
            )


def _ranker(name: str) -> Ranker:
    ranker = RANKERS.get(name)
    if ranker is None:
        raise InvalidRequest(
            f"Unknown ranker {name[:40]!r}; expected one of {', '.join(RANKERS)}.",
            param="ranking_options.ranker",
        )
    return ranker


def _unit_score(hit: Hit, mode: str, reranked: bool) -> float:
    """A hit's score in [0, 1] (OpenAI's range): BM25 is scaled by the best hit later."""
    if reranked and "rerank" in hit.components:
        return min(1.0, max(0.0, hit.score))
    if mode == "sparse":
        return max(0.0, hit.score)
    return min(1.0, max(0.0, hit.score))


# --- views ---------------------------------------------------------------------------------------


def _status(
    store: VectorStoreRecord, *, in_progress: bool
) -> Literal["expired", "in_progress", "completed"]:
    expires_at = _expires_at(store)
    if expires_at is not None and expires_at <= now_s():
        return "expired"
    return "in_progress" if in_progress else "completed"


def _expires_at(store: VectorStoreRecord) -> int | None:
    if store.expires_after_days is None:
        return None
    return store.last_active_at + store.expires_after_days * DAY_S


def store_view(
    store: VectorStoreRecord, counts: FileCounts, usage: int, chunks: int
) -> VectorStoreObject:
    expires_after = (
        VectorStoreExpirationAfter(anchor="last_active_at", days=store.expires_after_days)
        if store.expires_after_days is not None
        else None
    )
    return VectorStoreObject(
        id=store.id,
        created_at=store.created_at,
        name=store.name,
        usage_bytes=usage,
        file_counts=counts,
        status=_status(store, in_progress=counts.in_progress > 0),
        expires_after=expires_after,
        expires_at=_expires_at(store),
        last_active_at=store.last_active_at,
        metadata=store.metadata_ or {},
        rixin=VectorStoreRixin(
            embedding_model=store.embedding_model,
            chunks=chunks,
            faq_threshold=faq.threshold(store.faq_threshold),
            external=ExternalSource.from_record(store.external).view() if store.external else None,
        ),
    )


def file_view(
    row: VectorStoreFileRecord, progress: IngestionProgress | None = None
) -> VectorStoreFileObject:
    strategy = row.chunking_strategy or {}
    static = strategy.get("static") or {
        "max_chunk_size_tokens": DEFAULT_MAX_TOKENS,
        "chunk_overlap_tokens": DEFAULT_OVERLAP_TOKENS,
    }
    shown: StaticChunkingStrategyResponseParam | OtherChunkingStrategyResponseParam
    shown = StaticChunkingStrategyResponseParam(static=StaticChunkingStrategy(**static))
    rixin = None
    if faq.is_faq(strategy):
        shown, rixin = OtherChunkingStrategyResponseParam(), VectorStoreFileRixin(format="faq")
    if progress is not None and row.status == "in_progress":
        rixin = (rixin or VectorStoreFileRixin()).model_copy(update={"progress": progress})
    return VectorStoreFileObject(
        id=row.file_id,
        usage_bytes=row.usage_bytes,
        created_at=row.created_at,
        vector_store_id=row.vector_store_id,
        status=row.status,
        last_error=LastError(**row.last_error) if row.last_error else None,
        chunking_strategy=shown,
        attributes=row.attributes or {},
        rixin=rixin,
    )


def _add_count(counts: FileCounts, status: str, n: int) -> None:
    if status in ("in_progress", "completed", "failed", "cancelled"):
        setattr(counts, status, getattr(counts, status) + n)
    counts.total += n


async def _batch_view(
    session: AsyncSession, batch: VectorStoreFileBatchRecord
) -> VectorStoreFileBatchObject:
    rows = await session.execute(
        select(VectorStoreFileRecord.status, func.count())
        .where(VectorStoreFileRecord.batch_id == batch.id)
        .group_by(VectorStoreFileRecord.status)
    )
    counts = FileCounts()
    for file_status, n in rows:
        _add_count(counts, file_status, int(n))
    state: Literal["in_progress", "completed", "cancelled", "failed"]
    if batch.cancelled_at is not None:
        state = "cancelled"
    elif counts.in_progress:
        state = "in_progress"
    elif counts.total and counts.failed == counts.total:
        state = "failed"
    else:
        state = "completed"
    return VectorStoreFileBatchObject(
        id=batch.id,
        created_at=batch.created_at,
        vector_store_id=batch.vector_store_id,
        status=state,
        file_counts=counts,
    )


# --- lookups (every one scoped to the project) --------------------------------------------------


async def _store(
    session: AsyncSession, project_id: str, vector_store_id: str, *, param: str = "vector_store_id"
) -> VectorStoreRecord:
    store = (
        await session.get(VectorStoreRecord, vector_store_id)
        if len(vector_store_id) <= 64
        else None
    )
    if store is None or store.project_id != project_id:
        raise NotFound(f"No vector store found with id '{vector_store_id[:64]}'.", param=param)
    return store


async def _store_file(
    session: AsyncSession,
    project_id: str,
    vector_store_id: str,
    file_id: str,
    *,
    param: str = "file_id",
) -> VectorStoreFileRecord:
    await _store(session, project_id, vector_store_id)
    row = (
        await session.get(VectorStoreFileRecord, (vector_store_id, file_id))
        if len(file_id) <= 64
        else None
    )
    if row is None or row.project_id != project_id:
        raise NotFound(
            f"No file found with id '{file_id[:64]}' in vector store '{vector_store_id}'.",
            param=param,
        )
    return row


async def _batch(
    session: AsyncSession, project_id: str, vector_store_id: str, batch_id: str
) -> VectorStoreFileBatchRecord:
    await _store(session, project_id, vector_store_id)
    batch = await session.get(VectorStoreFileBatchRecord, batch_id) if len(batch_id) <= 64 else None
    if batch is None or batch.project_id != project_id or batch.vector_store_id != vector_store_id:
        raise NotFound(f"No file batch found with id '{batch_id[:64]}'.", param="batch_id")
    return batch


async def _project_files(
    session: AsyncSession, project_id: str, file_ids: Sequence[str], param: str
) -> list[FileRecord]:
    """The project's files, in order; ``NotFound`` for any other (A1: no existence leak)."""
    if not file_ids:
        return []
    valid = [f for f in file_ids if len(f) <= 64]
    found = {
        f.id: f
        for f in await session.scalars(
            select(FileRecord).where(
                FileRecord.id.in_(valid),
                FileRecord.project_id == project_id,
                or_(FileRecord.expires_at.is_(None), FileRecord.expires_at > now_s()),
            )
        )
    }
    for file_id in file_ids:
        if file_id not in found:
            raise NotFound(f"No file found with id '{file_id[:64]}'.", param=param)
    return [found[f] for f in file_ids]


async def _allowed_chunks(session: AsyncSession, vector_store_id: str, flt: Filter) -> set[str]:
    rows = await session.execute(
        select(VectorStoreFileRecord.file_id, VectorStoreFileRecord.attributes).where(
            VectorStoreFileRecord.vector_store_id == vector_store_id,
            VectorStoreFileRecord.status == "completed",
        )
    )
    files = [file_id for file_id, attrs in rows if matches(flt, attrs)]
    allowed: set[str] = set()
    for start in range(0, len(files), 500):
        allowed.update(
            await session.scalars(
                select(ChunkRecord.id).where(
                    ChunkRecord.vector_store_id == vector_store_id,
                    ChunkRecord.file_id.in_(files[start : start + 500]),
                )
            )
        )
    return allowed


async def _progress(
    session: AsyncSession, rows: Sequence[VectorStoreFileRecord]
) -> dict[str, IngestionProgress]:
    """The ingestion progress of the ``in_progress`` files among ``rows``, by file id."""
    keys = {
        job_key(r.vector_store_id, r.file_id, r.generation): r.file_id
        for r in rows
        if r.status == "in_progress"
    }
    if not keys:
        return {}
    result = await session.execute(
        select(
            JobRecord.idempotency_key, JobRecord.state, JobRecord.progress, JobRecord.attempts
        ).where(JobRecord.kind == JOB_KIND, JobRecord.idempotency_key.in_(list(keys)))
    )
    out: dict[str, IngestionProgress] = {}
    for key, state, progress, attempts in result:
        reported = dict(progress or {}) if state == "running" else {}
        stage = reported.get("stage")
        out[keys[str(key)]] = IngestionProgress(
            stage=stage if stage in ("parsing", "embedding", "writing") else "queued",
            done=reported.get("done"),
            total=reported.get("total"),
            attempt=int(attempts or 0),
        )
    return out


async def _stuck_files(session: AsyncSession) -> dict[tuple[str, str], str | None]:
    """``in_progress`` files whose ingestion job is missing (None) or was given up (its
    state), keyed by (vector store, file)."""
    rows = (
        await session.scalars(
            select(VectorStoreFileRecord)
            .where(VectorStoreFileRecord.status == "in_progress")
            .limit(1000)
        )
    ).all()
    if not rows:
        return {}
    keys = {job_key(r.vector_store_id, r.file_id, r.generation): r for r in rows}
    result = await session.execute(
        select(JobRecord.idempotency_key, JobRecord.state).where(
            JobRecord.kind == JOB_KIND, JobRecord.idempotency_key.in_(list(keys))
        )
    )
    states = {str(key): str(state) for key, state in result}
    stuck: dict[tuple[str, str], str | None] = {}
    for key, row in keys.items():
        state = states.get(key)
        if state is None or state in ("failed", "cancelled"):
            stuck[(row.vector_store_id, row.file_id)] = state
    return stuck


async def _bump_version(session: AsyncSession, vector_store_id: str) -> None:
    await session.execute(
        update(VectorStoreRecord)
        .where(VectorStoreRecord.id == vector_store_id)
        .values(chunks_version=VectorStoreRecord.chunks_version + 1)
    )


async def _paginate(
    session: AsyncSession,
    query: Any,
    columns: tuple[InstrumentedAttribute[Any], InstrumentedAttribute[Any]],
    key: Any,
    order: Order,
    limit: int,
    cursors: dict[str, Any],
) -> Page:
    """One page ordered by (created_at, id) ``order``, after/before the cursor rows."""
    limit = max(1, min(100, limit))
    created, ident = columns
    for name, row in cursors.items():
        at, row_id = key(row)
        later = or_(created > at, and_(created == at, ident > row_id))
        earlier = or_(created < at, and_(created == at, ident < row_id))
        forward = (name == "after") == (order == "asc")
        query = query.where(later if forward else earlier)
    backwards = "before" in cursors and "after" not in cursors
    ascending = (order == "asc") != backwards
    ordering = (created.asc(), ident.asc()) if ascending else (created.desc(), ident.desc())
    rows = list((await session.scalars(query.order_by(*ordering).limit(limit + 1))).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return Page(rows, has_more)
