"""``/v1/embeddings`` and ``/v1/rerank``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rixin.api.deps import PrincipalDep, ServicesDep
from rixin.schemas.embeddings import EmbeddingRequest, RerankRequest

router = APIRouter(prefix="/v1", tags=["embeddings"])


@router.post("/embeddings")
async def create_embedding(
    body: EmbeddingRequest, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.embeddings.create(body)


@router.post("/rerank")
async def rerank(
    body: RerankRequest, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.rerank.rerank(body)
