"""``create_app(settings)``: the whole server, built once, services passed down explicitly."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from rixin import __version__
from rixin.api import (
    admin,
    assistants,
    chat,
    conversations,
    dify,
    embeddings,
    errors,
    files,
    health,
    models,
    responses,
    threads,
    vector_stores,
)
from rixin.api.idempotency import IdempotencyMiddleware
from rixin.api.middleware import LOOPBACK_HOSTS, EdgeMiddleware, EdgeState
from rixin.auth.service import AuthService
from rixin.engines.registry import EngineContext
from rixin.jobs import JobQueue, WorkerPool
from rixin.knowledge.external import ExternalKnowledgeClient
from rixin.knowledge.store_index import StoreIndexes
from rixin.observability import Metrics
from rixin.services.chat import ChatService
from rixin.services.completions import CompletionService
from rixin.services.container import Services
from rixin.services.embeddings import EmbeddingService, RerankService
from rixin.services.files import FileService
from rixin.services.models import ModelManager
from rixin.services.responses import build_agent_services
from rixin.services.runs import build_assistants_services
from rixin.services.vector_stores import INGEST_JOB, VectorStoreService
from rixin.settings import Settings
from rixin.store.blobs import BlobStore
from rixin.store.db import Database
from rixin.store.idempotency import IdempotencyStore

log = logging.getLogger("rixin.app")


def build_services(settings: Settings, engine_ctx: EngineContext | None = None) -> Services:
    ctx = engine_ctx or engine_context(settings)
    db = Database(settings.resolved_database_url)
    metrics = Metrics()
    manager = ModelManager(settings, ctx)
    metrics.watch_routers(manager.snapshot)
    blobs = BlobStore(settings.data_dir / "files", db)
    jobs = JobQueue(db)
    workers = WorkerPool(jobs, concurrency=settings.ingest_workers)
    indexes = StoreIndexes(settings.data_dir / "index", db)
    external = ExternalKnowledgeClient.from_settings(settings.knowledge, os.environ)
    vector_stores = VectorStoreService(db, manager, jobs, blobs, indexes, external)
    workers.register(INGEST_JOB, vector_stores.ingest)
    chat_service = ChatService(manager, metrics, settings)
    files = FileService(db, blobs)
    responses, conversations = build_agent_services(
        settings, db, chat_service, manager, jobs, vector_stores=vector_stores, files=files
    )
    assistants_, threads_, runs_ = build_assistants_services(
        settings, db, responses.engine, manager, jobs
    )
    return Services(
        settings=settings,
        db=db,
        auth=AuthService(db, settings),
        idempotency=IdempotencyStore(db, settings.idempotency_ttl_s),
        models=manager,
        metrics=metrics,
        edge=EdgeState(),
        chat=chat_service,
        completions=CompletionService(manager, metrics, settings),
        embeddings=EmbeddingService(manager, metrics),
        rerank=RerankService(manager),
        blobs=blobs,
        files=files,
        jobs=jobs,
        workers=workers,
        vector_stores=vector_stores,
        responses=responses,
        conversations=conversations,
        assistants=assistants_,
        threads=threads_,
        runs=runs_,
    )


def engine_context(settings: Settings, **kwargs: Any) -> EngineContext:
    """Engine context from settings; upstream keys are read here, once, from the environment."""
    names = {r.api_key_env for m in settings.models for r in m.replicas if r.api_key_env}
    secrets = {name: os.environ[name] for name in names if name in os.environ}
    return EngineContext(
        models_dir=settings.resolved_models_dir,
        inference_threads=settings.inference_threads,
        n_ctx=settings.n_ctx,
        n_parallel=settings.n_parallel,
        secrets=secrets,
        **kwargs,
    )


def _allowed_hosts(settings: Settings) -> frozenset[str] | None:
    if settings.allowed_hosts:
        return frozenset(h.lower() for h in settings.allowed_hosts)
    if settings.host in LOOPBACK_HOSTS:
        return LOOPBACK_HOSTS
    return None


def create_app(
    settings: Settings,
    *,
    engine_ctx: EngineContext | None = None,
    on_ready: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    services = build_services(settings, engine_ctx)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await services.db.connect()
        await services.db.migrate()
        app.state.bootstrap = await services.auth.bootstrap()
        await services.models.start()
        services.blobs.sweep_tmp()
        await services.workers.start()
        await services.responses.start()
        await services.runs.start()
        await services.vector_stores.start()
        if on_ready is not None:
            on_ready(app)
        try:
            yield
        finally:
            await services.runs.aclose()
            await services.responses.aclose()
            await services.workers.stop()
            await services.vector_stores.aclose()
            await services.models.aclose()
            await services.db.aclose()

    app = FastAPI(
        title="rixin",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # Not served: the public allowlist is liveness and readiness only (RELIABILITY A3);
        # ``app.openapi()`` still builds the document for tests and tooling.
        openapi_url=None,
    )
    app.state.services = services
    errors.install(app)
    routers = (health, models, chat, embeddings, admin, files, vector_stores, dify)
    for module in (*routers, responses, conversations, assistants, threads):
        app.include_router(module.router)
    app.add_middleware(IdempotencyMiddleware, services=services)
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.max_body_bytes,
        allowed_hosts=_allowed_hosts(settings),
        state=services.edge,
        metrics=services.metrics,
    )
    return app
