"""Dify's External Knowledge API served over the caller's vector stores.

``knowledge_id`` is a vector store id of the caller's project (another project's store is
``NotFound``, as everywhere); the search is ``VectorStoreService.search`` with ``top_k`` as
``max_num_results`` (at most 50), ``score_threshold`` as the ranking threshold and the
``metadata_condition`` as attribute filters where our filters can say it, the rest checked on
each record (``rixin.knowledge.conditions``). A record's ``title`` is the filename and its
``metadata`` the file's attributes plus ``file_id``.
"""

from __future__ import annotations

from rixin.knowledge.conditions import plan
from rixin.schemas.dify import Record, RetrievalRequest, RetrievalResponse
from rixin.schemas.vector_stores import (
    RankingOptions,
    VectorStoreSearchRequest,
    VectorStoreSearchResultItem,
)
from rixin.services.vector_stores import VectorStoreService

MAX_TOP_K = 50
"""OpenAI's ``max_num_results`` cap; also what a search fetches when a condition must be
checked on the records."""


async def retrieve(
    stores: VectorStoreService, project_id: str, req: RetrievalRequest
) -> RetrievalResponse:
    how = plan(req.metadata_condition)
    top_k = min(req.retrieval_setting.top_k, MAX_TOP_K)
    search = VectorStoreSearchRequest(
        query=req.query,
        max_num_results=MAX_TOP_K if how.residual else top_k,
        filters=how.filters,
        ranking_options=RankingOptions(score_threshold=req.retrieval_setting.score_threshold),
    )
    page = await stores.search(project_id, req.knowledge_id, search)
    records = [record(item) for item in page.data]
    if how.residual is not None:
        records = [r for r in records if how.residual(r.metadata)]
    return RetrievalResponse(records=records[:top_k])


def record(item: VectorStoreSearchResultItem) -> Record:
    return Record(
        content="\n".join(part.text for part in item.content),
        score=item.score,
        title=item.filename,
        metadata={**(item.attributes or {}), "file_id": item.file_id},
    )
