"""Hybrid search: BM25 and vector search fused, optionally reranked, with a score threshold.

One query runs the sparse index (in a worker thread) and the embedder followed by the dense
index at the same time; each returns ``candidates`` hits; the two lists are fused by RRF or a
convex combination (``rixin.knowledge.index.fusion``); the top ``rerank_top`` may then be scored
again by a ``RerankModel`` (documents fetched through ``fetch_texts``); hits under
``score_threshold`` are dropped and the best ``k`` returned.

What the final score means depends on the last stage, so a threshold is set per configuration:

* ``sparse`` only: the BM25 score (unbounded, > 0);
* ``dense`` only: the cosine similarity;
* ``rrf``: the RRF sum divided by its maximum (first in every list), so in (0, 1];
* ``convex``: ``alpha * dense + (1 - alpha) * sparse`` after min-max, in [0, 1];
* reranked: the reranker's score (``llm_rerank``: P(yes), in [0, 1]).

Every hit carries its ``components`` (``dense``, ``dense_rank``, ``sparse``, ``sparse_rank``,
``fused``, ``rerank`` where they apply) so the API can show why it ranked where it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

from rixin.engines.base import EmbeddingModel, RerankModel
from rixin.knowledge.index.dense import DenseIndex
from rixin.knowledge.index.fusion import Normalisation, convex, rrf
from rixin.knowledge.index.sparse import SparseIndex

Mode = Literal["hybrid", "dense", "sparse"]
Fusion = Literal["rrf", "convex"]
FetchTexts = Callable[[Sequence[str]], Awaitable[Sequence[str]]]


class Hit(NamedTuple):
    chunk_id: str
    score: float
    components: dict[str, float]


@dataclass(frozen=True)
class SearchOptions:
    mode: Mode = "hybrid"
    fusion: Fusion = "rrf"
    rrf_k: int = 60
    alpha: float = 0.5
    """Weight of the dense side in ``convex`` fusion."""
    normalisation: Normalisation = "minmax"
    candidates: int = 50
    """Hits taken from each retriever before fusion."""
    rerank: bool = True
    """Rerank when the searcher has a reranker."""
    rerank_top: int = 20
    score_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("hybrid", "dense", "sparse"):
            raise ValueError(f"unknown search mode {self.mode!r}")
        if self.fusion not in ("rrf", "convex"):
            raise ValueError(f"unknown fusion {self.fusion!r}")
        if self.candidates < 1 or self.rerank_top < 1 or self.rrf_k < 0:
            raise ValueError("candidates and rerank_top must be positive, rrf_k non-negative")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be within [0, 1]")


class HybridSearcher:
    """Search over one vector store's sparse and dense indexes."""

    def __init__(
        self,
        *,
        sparse: SparseIndex | None,
        dense: DenseIndex | None,
        embedder: EmbeddingModel | None,
        reranker: RerankModel | None = None,
        fetch_texts: FetchTexts | None = None,
        options: SearchOptions | None = None,
    ) -> None:
        if dense is not None and embedder is None:
            raise ValueError("a dense index needs an embedder for the queries")
        if reranker is not None and fetch_texts is None:
            raise ValueError("a reranker needs fetch_texts to read the candidates")
        self.sparse = sparse
        self.dense = dense
        self.embedder = embedder
        self.reranker = reranker
        self.fetch_texts = fetch_texts
        self.options = options or SearchOptions()

    async def search(
        self,
        query: str,
        k: int = 10,
        *,
        allowed_ids: Collection[str] | None = None,
        options: SearchOptions | None = None,
        query_vector: Sequence[float] | None = None,
        **overrides: object,
    ) -> list[Hit]:
        """The best ``k`` hits for ``query``; ``overrides`` replace fields of the options;
        ``query_vector``: the query's embedding when the caller already has it."""
        opts = replace(options or self.options, **overrides)  # type: ignore[arg-type]
        if k <= 0:
            return []
        width = max(opts.candidates, k)
        use_dense = opts.mode != "sparse" and self.dense is not None
        use_sparse = opts.mode != "dense" and self.sparse is not None
        dense_hits, sparse_hits = await asyncio.gather(
            self._dense(query, width, allowed_ids, query_vector) if use_dense else _nothing(),
            self._sparse(query, width, allowed_ids) if use_sparse else _nothing(),
        )
        hits = self._fuse(dense_hits, sparse_hits, opts, use_dense and use_sparse)
        if opts.rerank and self.reranker is not None and hits:
            hits = await self._rerank(query, hits, opts.rerank_top)
        if opts.score_threshold is not None:
            hits = [hit for hit in hits if hit.score >= opts.score_threshold]
        return hits[:k]

    async def _dense(
        self,
        query: str,
        k: int,
        allowed_ids: Collection[str] | None,
        vector: Sequence[float] | None = None,
    ) -> list[tuple[str, float]]:
        assert self.dense is not None and self.embedder is not None
        if self.dense.count == 0:
            return []
        if vector is None:
            vector = (await self.embedder.embed([query], input_type="query")).vectors[0]
        return await asyncio.to_thread(self.dense.search, vector, k, allowed_ids)

    async def _sparse(
        self, query: str, k: int, allowed_ids: Collection[str] | None
    ) -> list[tuple[str, float]]:
        assert self.sparse is not None
        return await asyncio.to_thread(self.sparse.search, query, k, allowed_ids)

    @staticmethod
    def _fuse(
        dense: list[tuple[str, float]],
        sparse: list[tuple[str, float]],
        opts: SearchOptions,
        both: bool,
    ) -> list[Hit]:
        components: dict[str, dict[str, float]] = {}
        for name, hits in (("dense", dense), ("sparse", sparse)):
            for rank, (chunk_id, score) in enumerate(hits, start=1):
                parts = components.setdefault(chunk_id, {})
                parts[name], parts[f"{name}_rank"] = score, float(rank)
        if not both:
            return [Hit(c, s, components[c]) for c, s in dense or sparse]
        if opts.fusion == "rrf":
            fused = rrf([[c for c, _ in dense], [c for c, _ in sparse]], k=opts.rrf_k)
            best = 2.0 / (opts.rrf_k + 1)
            fused = [(c, s / best) for c, s in fused]
        else:
            fused = convex(dict(dense), dict(sparse), opts.alpha, opts.normalisation)
        ranked: list[Hit] = []
        for chunk_id, score in fused:
            components[chunk_id]["fused"] = score
            ranked.append(Hit(chunk_id, score, components[chunk_id]))
        return ranked

    async def _rerank(self, query: str, hits: list[Hit], top: int) -> list[Hit]:
        assert self.reranker is not None and self.fetch_texts is not None
        head, tail = hits[:top], hits[top:]
        texts = await self.fetch_texts([hit.chunk_id for hit in head])
        result = await self.reranker.rerank(query, list(texts))
        reranked = []
        for hit, score in zip(head, result.scores, strict=True):
            hit.components["rerank"] = score
            reranked.append(Hit(hit.chunk_id, score, hit.components))
        # Stable: equal rerank scores keep the fused order. Unreranked hits follow, unscored
        # by the reranker, so they rank below every reranked one.
        reranked.sort(key=lambda hit: -hit.score)
        floor = min((hit.score for hit in reranked), default=0.0)
        return reranked + [Hit(h.chunk_id, min(h.score, floor), h.components) for h in tail]


async def _nothing() -> list[tuple[str, float]]:
    return []
