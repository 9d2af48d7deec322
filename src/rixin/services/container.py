"""The services built once at start-up and shared by every request."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rixin.api.middleware import EdgeState
    from rixin.auth.service import AuthService
    from rixin.jobs import JobQueue, WorkerPool
    from rixin.observability import Metrics
    from rixin.services.assistants import AssistantsService
    from rixin.services.chat import ChatService
    from rixin.services.completions import CompletionService
    from rixin.services.conversations import ConversationService
    from rixin.services.embeddings import EmbeddingService, RerankService
    from rixin.services.files import FileService
    from rixin.services.grounding import GroundingService
    from rixin.services.models import ModelManager
    from rixin.services.responses import ResponsesService
    from rixin.services.runs import RunsService
    from rixin.services.threads import ThreadsService
    from rixin.services.vector_stores import VectorStoreService
    from rixin.settings import Settings
    from rixin.store.blobs import BlobStore
    from rixin.store.db import Database
    from rixin.store.idempotency import IdempotencyStore


@dataclass
class Services:
    settings: Settings
    db: Database
    auth: AuthService
    idempotency: IdempotencyStore
    models: ModelManager
    metrics: Metrics
    edge: EdgeState
    chat: ChatService
    completions: CompletionService
    embeddings: EmbeddingService
    rerank: RerankService
    blobs: BlobStore
    files: FileService
    jobs: JobQueue
    workers: WorkerPool
    vector_stores: VectorStoreService
    responses: ResponsesService
    conversations: ConversationService
    assistants: AssistantsService
    threads: ThreadsService
    runs: RunsService

    @functools.cached_property
    def grounding(self) -> GroundingService:
        """Chat completions grounded in vector stores; built once, from ``chat`` and
        ``vector_stores``, on first use."""
        from rixin.services.grounding import GroundingService

        return GroundingService(self.chat, self.vector_stores)
