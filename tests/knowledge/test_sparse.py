"""BM25: segmentation, ranking, filters, and queries that look like FTS5 syntax."""

from __future__ import annotations

import math
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from rixin.knowledge.index import sparse as sparse_module
from rixin.knowledge.index.segment import query_terms, tokenize
from rixin.knowledge.index.sparse import SparseIndex

DOCS = {
    "en-fox": "The quick brown fox jumps over the lazy dog near the river.",
    "en-cell": "Stem cells differentiate into many cell types; differentiation is studied.",
    "en-syntax": 'Weird "quoted" text with stars * and minus - signs: NEAR AND OR NOT',
    "zh-beijing": "清华大学位于北京市海淀区，是中国著名的高等学府。",
    "zh-weather": "今天上海的天气很好，适合出去散步。",
    "mixed": "COVID-19 疫苗的研究进展 vaccine research progress",
}


@pytest.fixture
def index() -> SparseIndex:
    idx = SparseIndex(":memory:", name="vs_test")
    idx.add_many(DOCS.items())
    return idx


def test_tokenize_english_stems_and_drops_stopwords() -> None:
    assert tokenize("The runners were Running to the cells") == ["runner", "were", "run", "cell"]
    assert tokenize("ＡＢＣ full-width") == ["abc", "full", "width"]
    assert tokenize("a I x") == []  # stop-words and one-letter words


def test_tokenize_chinese_search_mode_is_deterministic() -> None:
    tokens = tokenize("中华人民共和国的首都是北京")
    assert {"中华人民共和国", "人民", "共和国", "首都", "北京"} <= set(tokens)
    assert "，" not in tokenize("北京，上海") and tokenize("北京。") == ["北京"]
    assert tokenize("中华人民共和国的首都是北京") == tokens
    assert query_terms("北京 北京 Beijing beijing") == ["北京", "beij"]


def test_chinese_query_finds_the_chinese_document(index: SparseIndex) -> None:
    assert index.search("清华大学在哪里", 3)[0][0] == "zh-beijing"
    assert index.search("北京", 3)[0][0] == "zh-beijing"
    assert index.search("上海天气", 3)[0][0] == "zh-weather"
    assert index.search("疫苗", 3)[0][0] == "mixed"


def test_english_query_matches_through_stemming(index: SparseIndex) -> None:
    hits = index.search("differentiating stem cell", 3)
    assert hits[0][0] == "en-cell"
    assert all(score > 0 for _, score in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


@pytest.mark.parametrize(
    "query",
    ['"', '""', "*", "fox*", "NEAR(fox dog)", "fox NEAR dog", "-fox", "fox -dog", "tokens:fox",
     "vs_test_fts:fox", "AND", "OR NOT", "(fox", "fox)", "^fox", "{tokens}: fox",
     "'; DROP TABLE x;--",
     "fox\x00dog", "+", "fox + dog", '"fox" OR "dog"'],
)  # fmt: skip
def test_fts_syntax_in_queries_is_plain_text(index: SparseIndex, query: str) -> None:
    hits = index.search(query, 5)  # never raises sqlite3.OperationalError
    if "fox" in query:
        assert hits and hits[0][0] == "en-fox"
    assert index.count == len(DOCS)


def test_allowed_ids_filter_and_empty_cases(index: SparseIndex) -> None:
    everything = dict(index.search("fox cells 北京", 5))
    assert set(everything) == {"en-fox", "en-cell", "zh-beijing"}
    only = index.search("fox cells 北京", 5, allowed_ids={"en-cell", "zh-weather", "unknown"})
    assert only == [("en-cell", everything["en-cell"])]
    assert index.search("fox", 5, allowed_ids=set()) == []
    assert index.search("", 5) == []
    assert index.search("the of", 5) == []  # only stop-words
    assert index.search("fox", 0) == []


def test_reindex_and_delete(index: SparseIndex) -> None:
    index.add("en-fox", "a document about owls")
    assert index.search("fox", 5) == []
    assert index.search("owls", 5)[0][0] == "en-fox"
    index.delete(["en-fox", "missing"])
    assert index.search("owls", 5) == []
    assert index.count == len(DOCS) - 1
    index.clear()
    assert index.count == 0


def test_persists_in_a_file_and_shares_a_connection(tmp_path: Path) -> None:
    path = tmp_path / "kb.db"
    SparseIndex(path, name="a").add("x", "persistent words")
    again = SparseIndex(path, name="a")
    assert again.search("persistent", 1)[0][0] == "x"
    conn = sqlite3.connect(":memory:")
    one, two = SparseIndex(conn, name="one"), SparseIndex(conn, name="two")
    one.add("x", "alpha")
    assert two.search("alpha", 1) == []
    with pytest.raises(ValueError):
        SparseIndex(conn, name="bad name; drop")
    again.close()
    conn.close()


def test_worker_threads_can_share_an_index(tmp_path: Path) -> None:
    idx = SparseIndex(tmp_path / "kb.db")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                idx.add(f"{n}-{i}", f"thread {n} document {i}")
                idx.search("document", 5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert idx.count == 80
    idx.close()


def _reference_bm25(docs: dict[str, list[str]], terms: list[str]) -> dict[str, float]:
    """Textbook BM25 (Lucene idf) over ``docs``, for checking the postings."""
    k1, b = sparse_module.K1, sparse_module.B
    n = len(docs)
    avg = sum(len(t) for t in docs.values()) / n
    scores: dict[str, float] = {}
    for term in terms:
        df = sum(term in tokens for tokens in docs.values())
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for doc, tokens in docs.items():
            tf = tokens.count(term)
            if tf:
                norm = k1 * (1 - b + b * len(tokens) / avg)
                scores[doc] = scores.get(doc, 0.0) + idf * tf * (k1 + 1) / (tf + norm)
    return scores


@pytest.mark.parametrize("compact_at", [4, 65_536])
def test_scores_stay_exact_through_adds_deletes_and_compactions(
    monkeypatch: pytest.MonkeyPatch, compact_at: int
) -> None:
    monkeypatch.setattr(sparse_module, "_MIN_COMPACT", compact_at)
    rng = random.Random(7)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    idx = SparseIndex(":memory:", name="exact")
    live: dict[str, list[str]] = {}
    for step in range(300):
        doc = f"d{rng.randrange(60)}"
        if rng.random() < 0.25:
            idx.delete([doc])
            live.pop(doc, None)
        else:
            text = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 12)))
            idx.add(doc, text)
            live[doc] = tokenize(text)
        if step % 25 == 0 and live:
            query = " ".join(rng.sample(words, 3))
            expected = _reference_bm25(live, query_terms(query))
            got = dict(idx.search(query, 100))
            assert got.keys() == expected.keys()
            for doc_id, score in expected.items():
                assert got[doc_id] == pytest.approx(score, rel=1e-5)
    assert idx.count == len(live)


def test_a_filter_does_not_change_the_scores(index: SparseIndex) -> None:
    everything = dict(index.search("stem cells fox", 5))
    only = index.search("stem cells fox", 5, allowed_ids={"en-cell"})
    assert only == [("en-cell", everything["en-cell"])]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_pruning_returns_what_scoring_everything_returns(
    monkeypatch: pytest.MonkeyPatch, k: int
) -> None:
    """Common words (Zipf) are only looked up for the rows that can still make the top k;
    the result must be the reference top k, through deletes and under a filter."""
    monkeypatch.setattr(sparse_module, "_MIN_COMPACT", 64)
    rng = random.Random(k)
    words = [f"w{i}" for i in range(40)]
    weights = [1 / (i + 1) ** 1.3 for i in range(len(words))]
    idx = SparseIndex(":memory:", name="pruned")
    live: dict[str, list[str]] = {}
    for n in range(400):
        text = " ".join(rng.choices(words, weights, k=rng.randrange(3, 20)))
        idx.add(f"d{n}", text)
        live[f"d{n}"] = tokenize(text)
    gone = [f"d{n}" for n in rng.sample(range(400), 40)]
    idx.delete(gone)
    for doc in gone:
        live.pop(doc)
    allowed = set(rng.sample(sorted(live), 150))
    for _ in range(40):
        query = " ".join(rng.choices(words, weights, k=3) + rng.sample(words, 2))
        for only in (None, allowed):
            scores = _reference_bm25(live, query_terms(query))
            ranked = sorted(
                ((s, d) for d, s in scores.items() if only is None or d in only),
                key=lambda pair: -pair[0],
            )[:k]
            got = idx.search(query, k, allowed_ids=only)
            assert [s for _, s in got] == pytest.approx([s for s, _ in ranked], rel=1e-5)
            for doc_id, score in got:  # ties may come in either order, never a wrong score
                assert scores[doc_id] == pytest.approx(score, rel=1e-5)
