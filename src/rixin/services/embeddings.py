"""Embeddings and reranking over the routed embedding and rerank models."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import numpy as np

from rixin.errors import InvalidRequest, UnsupportedParameter
from rixin.observability import Metrics
from rixin.schemas.embeddings import EmbeddingRequest, RerankRequest
from rixin.services.models import ModelManager


class EmbeddingService:
    def __init__(self, models: ModelManager, metrics: Metrics) -> None:
        self.models = models
        self.metrics = metrics

    async def create(self, req: EmbeddingRequest) -> dict[str, Any]:
        served = self.models.get(req.model, "embedding")
        texts = _texts(req.input)
        native = served.capabilities.embedding_dims
        dims = req.dimensions
        if dims is not None and dims != native and dims not in served.capabilities.matryoshka_dims:
            raise UnsupportedParameter(
                f"Model '{req.model}' does not support dimensions={dims}"
                f" (it produces {native}-dimensional embeddings).",
                param="dimensions",
            )
        router = served.require_router()
        routed = await router.call(lambda backend: backend.embed(texts, input_type=req.input_type))
        vectors = routed.value.vectors
        if dims is not None and dims != vectors.shape[1]:
            vectors = vectors[:, :dims]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        tokens = int(routed.value.prompt_tokens)
        self.metrics.count_tokens(req.model, tokens, 0)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
                for i, v in enumerate(vectors)
            ],
            "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if value and not isinstance(value[0], str):
        raise UnsupportedParameter(
            "This model takes text input only; token-id arrays are not supported.",
            param="input",
        )
    for i, text in enumerate(value):
        if not text.strip():
            raise InvalidRequest(
                f"'$.input[{i}]' is invalid: input must be a non-empty string.", param="input"
            )
    return list(value)


def _encode(vector: np.ndarray[Any, Any], encoding: str) -> list[float] | str:
    as_float32 = np.asarray(vector, dtype="<f4")
    if encoding == "base64":
        return base64.b64encode(as_float32.tobytes()).decode()
    return [float(x) for x in as_float32]


class RerankService:
    def __init__(self, models: ModelManager) -> None:
        self.models = models

    async def rerank(self, req: RerankRequest) -> dict[str, Any]:
        served = self.models.get(req.model, "rerank")
        router = served.require_router()
        routed = await router.call(lambda backend: backend.rerank(req.query, req.documents))
        scores = routed.value.scores
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
        if req.top_n is not None:
            order = order[: req.top_n]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if req.return_documents:
                item["document"] = {"text": req.documents[i]}
            results.append(item)
        tokens = int(routed.value.prompt_tokens)
        return {
            "id": f"rerank-{secrets.token_urlsafe(18)}",
            "model": req.model,
            "results": results,
            "usage": {"total_tokens": tokens},
        }
