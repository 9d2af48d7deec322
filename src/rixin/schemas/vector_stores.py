"""The Vector Stores API wire shapes (``/v1/vector_stores``, files, file batches, search).

Shapes follow ``openapi.yaml`` (``VectorStoreObject``, ``CreateVectorStoreRequest``,
``UpdateVectorStoreRequest``, ``ListVectorStoresResponse``, ``DeleteVectorStoreResponse``,
``VectorStoreFileObject``, ``CreateVectorStoreFileRequest``, ``ListVectorStoreFilesResponse``,
``DeleteVectorStoreFileResponse``, ``VectorStoreFileBatchObject``,
``CreateVectorStoreFileBatchRequest``, ``VectorStoreSearchRequest``,
``VectorStoreSearchResultsPage``, ``VectorStoreFileContentResponse``,
``UpdateVectorStoreFileAttributesRequest``, ``ComparisonFilter``, ``CompoundFilter``, the chunking
strategies and ``VectorStoreExpirationAfter``), same names and field order. rixin's additions sit
in marked blocks: the embedding model of a store, its FAQ match threshold, a file's ``format``
(``faq``: a question-answer knowledge base), and more rankers for search.

Filters and chunking strategies arrive as plain JSON and are checked by the service, which names
the exact ``param`` of a bad value (``chunking_strategy.static.max_chunk_size_tokens``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from rixin.schemas.common import OpenAIBaseModel
from rixin.schemas.dify import ExternalKnowledge, ExternalKnowledgeParam

FileStatus = Literal["in_progress", "completed", "cancelled", "failed"]
Metadata = dict[str, str]
Attributes = dict[str, str | bool | float | int]


class VectorStoreExpirationAfter(OpenAIBaseModel):
    anchor: Literal["last_active_at"]
    days: Annotated[int, Field(ge=1, le=365)]


class FileCounts(OpenAIBaseModel):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class VectorStoreRixin(OpenAIBaseModel):
    """rixin extension: how the store embeds and indexes its chunks."""

    embedding_model: str
    chunks: int = 0
    external: ExternalKnowledge | None = Field(default=None, exclude_if=lambda v: v is None)
    """Set when the store is backed by an external knowledge endpoint (no key shown)."""
    faq_threshold: float | None = None
    """A FAQ entry whose question is at least this similar (cosine) to the query is returned
    first, with its answer."""


class VectorStoreObject(OpenAIBaseModel):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    usage_bytes: int
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    expires_after: VectorStoreExpirationAfter | None = Field(
        default=None, exclude_if=lambda v: v is None
    )
    """Not nullable in the spec: left out when the store never expires."""
    expires_at: int | None = None
    last_active_at: int | None
    metadata: Metadata | None = None
    # --- rixin extension -------------------------------------------------------------------
    rixin: VectorStoreRixin | None = None


class RixinVectorStoreOptions(OpenAIBaseModel):
    """rixin extension of ``CreateVectorStoreRequest``."""

    embedding_model: str | None = None
    """An embedding model id served by this rixin (default ``multilingual-e5-small``)."""
    external: ExternalKnowledgeParam | None = None
    """Back the store by a Dify-style External Knowledge API instead of files."""
    faq_threshold: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """See ``VectorStoreRixin.faq_threshold``; None: the default."""


class RixinVectorStoreUpdate(OpenAIBaseModel):
    """rixin extension of ``UpdateVectorStoreRequest``."""

    faq_threshold: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """None (given explicitly): back to the default."""


class CreateVectorStoreRequest(OpenAIBaseModel):
    file_ids: Annotated[list[str], Field(max_length=500)] | None = None
    name: str | None = None
    description: str | None = None
    expires_after: VectorStoreExpirationAfter | None = None
    chunking_strategy: dict[str, Any] | None = None
    metadata: Metadata | None = None
    # --- rixin extension -------------------------------------------------------------------
    rixin: RixinVectorStoreOptions | None = None


class UpdateVectorStoreRequest(OpenAIBaseModel):
    name: str | None = None
    expires_after: VectorStoreExpirationAfter | None = None
    metadata: Metadata | None = None
    # --- rixin extension -------------------------------------------------------------------
    rixin: RixinVectorStoreUpdate | None = None


class ListVectorStoresResponse(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class DeleteVectorStoreResponse(OpenAIBaseModel):
    id: str
    object: Literal["vector_store.deleted"] = "vector_store.deleted"
    deleted: bool = True


class LastError(OpenAIBaseModel):
    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


class StaticChunkingStrategy(OpenAIBaseModel):
    max_chunk_size_tokens: int
    chunk_overlap_tokens: int


class StaticChunkingStrategyResponseParam(OpenAIBaseModel):
    type: Literal["static"] = "static"
    static: StaticChunkingStrategy


class OtherChunkingStrategyResponseParam(OpenAIBaseModel):
    """A file not chunked by size (rixin: a FAQ file, one chunk per entry)."""

    type: Literal["other"] = "other"


class IngestionProgress(OpenAIBaseModel):
    """Where an ``in_progress`` file's ingestion stands (queued until a worker takes it)."""

    stage: Literal["queued", "parsing", "embedding", "writing"]
    done: int | None = None
    """Chunks embedded so far (``embedding``)."""
    total: int | None = None
    """Chunks of the file, once it is parsed."""
    attempt: int = 0


class VectorStoreFileRixin(OpenAIBaseModel):
    """rixin extension: how the file was read and, while it is ingested, how far it got."""

    format: Literal["document", "faq"] = "document"
    progress: IngestionProgress | None = None


class VectorStoreFileObject(OpenAIBaseModel):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    usage_bytes: int
    created_at: int
    vector_store_id: str
    status: FileStatus
    last_error: LastError | None
    chunking_strategy: (
        StaticChunkingStrategyResponseParam | OtherChunkingStrategyResponseParam | None
    ) = None
    attributes: Attributes | None = None
    # --- rixin extension -------------------------------------------------------------------
    rixin: VectorStoreFileRixin | None = Field(default=None, exclude_if=lambda v: v is None)
    """Shown for FAQ files only."""


class RixinVectorStoreFileOptions(OpenAIBaseModel):
    """rixin extension of ``CreateVectorStoreFileRequest`` and file batches."""

    format: Literal["document", "faq"] = "document"
    """``faq``: a CSV/XLSX/JSON file of questions, similar questions and answers (one chunk
    per entry, matched question first at search)."""


class CreateVectorStoreFileRequest(OpenAIBaseModel):
    file_id: str
    chunking_strategy: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None
    # --- rixin extension -------------------------------------------------------------------
    rixin: RixinVectorStoreFileOptions | None = None


class UpdateVectorStoreFileAttributesRequest(OpenAIBaseModel):
    attributes: dict[str, Any] | None


class ListVectorStoreFilesResponse(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreFileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class DeleteVectorStoreFileResponse(OpenAIBaseModel):
    id: str
    object: Literal["vector_store.file.deleted"] = "vector_store.file.deleted"
    deleted: bool = True


class VectorStoreFileContent(OpenAIBaseModel):
    type: Literal["text"] = "text"
    text: str


class VectorStoreFileContentResponse(OpenAIBaseModel):
    object: Literal["vector_store.file_content.page"] = "vector_store.file_content.page"
    data: list[VectorStoreFileContent]
    has_more: bool = False
    next_page: str | None = None


class CreateVectorStoreFileBatchRequest(OpenAIBaseModel):
    file_ids: Annotated[list[str], Field(min_length=1, max_length=2000)] | None = None
    files: (
        Annotated[list[CreateVectorStoreFileRequest], Field(min_length=1, max_length=2000)] | None
    ) = None
    chunking_strategy: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None
    # --- rixin extension -------------------------------------------------------------------
    rixin: RixinVectorStoreFileOptions | None = None


class VectorStoreFileBatchObject(OpenAIBaseModel):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: FileStatus
    file_counts: FileCounts


class RankingOptions(OpenAIBaseModel):
    ranker: str = "auto"
    """OpenAI's ``auto``, ``none``, ``default-2024-11-15``; rixin also takes ``hybrid``,
    ``hybrid_convex``, ``dense``, ``bm25`` and ``hybrid_rerank`` (see the search service)."""
    score_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


class VectorStoreSearchRequest(OpenAIBaseModel):
    query: str | Annotated[list[str], Field(min_length=1, max_length=16)]
    rewrite_query: bool = False
    max_num_results: Annotated[int, Field(ge=1, le=50)] = 10
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions | None = None


class VectorStoreSearchResultContentObject(OpenAIBaseModel):
    type: Literal["text"] = "text"
    text: str


class VectorStoreSearchResultItem(OpenAIBaseModel):
    file_id: str
    filename: str
    score: float
    attributes: Attributes | None = None
    content: list[VectorStoreSearchResultContentObject]


class VectorStoreSearchResultsPage(OpenAIBaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[VectorStoreSearchResultItem]
    has_more: bool = False
    next_page: str | None = None
