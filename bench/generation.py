"""Generation throughput: rixin vs the same llama.cpp runtime, side by side in one script.

1 stream: tokens/s streamed through rixin's `/v1/chat/completions` vs xllamacpp driven directly
in-process on the same GGUF. 4 streams: aggregate tokens/s through rixin vs llama.cpp's own HTTP
server (xllamacpp's listener) with 4 slots. Both next to the bandwidth ceiling (measured copy
GB/s ÷ model bytes). Runs alternate (never concurrently), 3 rounds, medians; load average
recorded with every figure.

    make bench-generation        # or: .venv/bin/python bench/generation.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from harness import RixinProcess, free_port, test_models_dir  # noqa: E402
from rixin.engines import packaged  # noqa: E402

MODEL_PACKAGE = "qwen2.5-coder-0.5b-instruct-q4"
PROMPT = [{"role": "user", "content": "Write a long story about a robot learning to paint."}]
MAX_TOKENS = 96
THREADS = 2
N_CTX = 8192  # rixin's default n_ctx, one unified KV cache shared by the slots


def bandwidth_gbs() -> float:
    src = np.ones(256 * 1024 * 1024 // 8)
    dst = np.empty_like(src)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(dst, src)
        elapsed = time.perf_counter() - start
        best = max(best, 2 * src.nbytes / elapsed / 1e9)
    return best


def body(stream: bool) -> dict[str, Any]:
    return {
        "messages": PROMPT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "seed": 1,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }


def llama_server(gguf: Path, n_parallel: int, http: bool) -> Any:
    """llama.cpp's server in process, configured as rixin's llamacpp backend configures it.

    xllamacpp always opens an HTTP listener; the direct (in-process) one is locked with a random
    key, the one the bench talks HTTP to has none. Each gets its own free port."""
    import xllamacpp as x

    params = x.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx = N_CTX
    params.n_parallel = n_parallel
    params.kv_unified = True
    params.ctx_shift = False
    params.cpuparams.n_threads = THREADS
    params.cpuparams_batch.n_threads = THREADS
    params.use_jinja = True
    params.warmup = False
    params.verbosity = 0
    params.port = free_port()
    params.api_keys = [] if http else [secrets.token_urlsafe(32)]
    return x.Server(params)


def direct_stream(server: Any) -> tuple[int, float]:
    """Tokens and seconds from first to last token, via the native streaming callback."""
    times: list[float] = []
    tokens = [0]

    def on_chunk(chunk: dict[str, Any]) -> bool:
        for choice in chunk.get("choices", []):
            if (choice.get("delta") or {}).get("content"):
                times.append(time.perf_counter())
        if chunk.get("usage"):
            tokens[0] = chunk["usage"]["completion_tokens"]
        return False

    server.handle_chat_completions({k: v for k, v in body(True).items() if v is not None}, on_chunk)
    return tokens[0], times[-1] - times[0]


async def sse_stream(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any]
) -> tuple[int, float, float]:
    """Tokens, seconds from first to last token, and time to first token."""
    times: list[float] = []
    tokens = 0
    start = time.perf_counter()
    async with client.stream("POST", url, json=payload) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line.endswith("[DONE]"):
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices", []):
                if (choice.get("delta") or {}).get("content"):
                    times.append(time.perf_counter())
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return tokens, times[-1] - times[0], times[0] - start


async def aggregate(
    url: str, headers: dict[str, str], model: str, streams: int
) -> tuple[float, float]:
    """Aggregate tokens/s over ``streams`` concurrent streams, and their worst TTFT (s)."""
    payload = {k: v for k, v in body(True).items() if v is not None} | {"model": model}
    async with httpx.AsyncClient(headers=headers, timeout=600) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(sse_stream(client, url, payload) for _ in range(streams)))
        wall = time.perf_counter() - start
    return sum(r[0] for r in results) / wall, max(r[2] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    gguf = packaged.assemble(MODEL_PACKAGE, test_models_dir())
    model_bytes = gguf.stat().st_size
    gbs = bandwidth_gbs()
    ceiling = gbs * 1e9 / model_bytes
    print(
        f"bandwidth {gbs:.1f} GB/s, model {model_bytes / 1e9:.2f} GB -> ceiling {ceiling:.1f} tok/s"
    )

    chat_model = {
        "id": "bench-chat",
        "kind": "chat",
        "replicas": [
            {
                "backend": "llamacpp",
                "package": MODEL_PACKAGE,
                "max_concurrency": args.streams,
                "options": {"n_parallel": args.streams},
            }
        ],
    }
    # All three stay loaded (~0.5 GB each) so every round alternates the sides; llama.cpp's
    # threads wait passively, so an idle server takes no CPU from the one being measured.
    direct = llama_server(gguf, 1, http=False)
    own = llama_server(gguf, args.streams, http=True)
    own_url = f"{own.listening_address}/v1/chat/completions"
    one_direct: list[float] = []
    one_rixin: list[float] = []
    agg: dict[str, list[tuple[float, float]]] = {"rixin": [], "llama": []}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        rixin = RixinProcess(
            Path(tmp),
            models=[chat_model],
            env={"RIXIN_INFERENCE_THREADS": str(THREADS), "RIXIN_N_PARALLEL": str(args.streams)},
        ).start()
        url = f"{rixin.api_url}/chat/completions"
        try:
            asyncio.run(_one(url, rixin.headers()))  # warm-up: page the weights in, both sides
            direct_stream(direct)
            asyncio.run(aggregate(own_url, {}, "x", 1))
            for rnd in range(args.rounds):
                flip = rnd % 2 == 1
                for side in ("rixin", "direct")[:: -1 if flip else 1]:
                    if side == "direct":
                        tokens, seconds = direct_stream(direct)
                        one_direct.append((tokens - 1) / seconds)  # n tokens span n - 1 gaps
                    else:
                        tokens, seconds, _ = asyncio.run(_one(url, rixin.headers()))
                        one_rixin.append((tokens - 1) / seconds)
                for side in ("llama", "rixin")[:: -1 if flip else 1]:
                    if side == "rixin":
                        result = aggregate(url, rixin.headers(), "bench-chat", args.streams)
                    else:
                        result = aggregate(own_url, {}, "x", args.streams)
                    agg[side].append(asyncio.run(result))
                loads.append(os.getloadavg()[0])
                print(
                    f"round {rnd + 1}: 1 stream rixin {one_rixin[-1]:.1f} direct "
                    f"{one_direct[-1]:.1f} tok/s; {args.streams} streams rixin "
                    f"{agg['rixin'][-1][0]:.1f} llama.cpp server {agg['llama'][-1][0]:.1f} tok/s; "
                    f"load {loads[-1]:.2f}",
                    flush=True,
                )
        finally:
            rixin.stop()
    load = statistics.median(loads)
    d, r = statistics.median(one_direct), statistics.median(one_rixin)
    ar = statistics.median(a for a, _ in agg["rixin"])
    al = statistics.median(a for a, _ in agg["llama"])
    tr = statistics.median(t for _, t in agg["rixin"]) * 1000
    tl = statistics.median(t for _, t in agg["llama"]) * 1000
    print(f"\nmax_tokens {MAX_TOKENS}, threads {THREADS}, {args.rounds} rounds, medians")
    print(
        f"1-stream tokens/s = {r:.1f} (peer xllamacpp direct {d:.1f}, ratio {r / d:.3f}, "
        f"anchor bandwidth ceiling {ceiling:.1f}; goal >= 0.97), load {load:.2f}"
    )
    print(
        f"{args.streams}-stream aggregate tokens/s = {ar:.1f} (peer llama.cpp server "
        f"{args.streams} slots {al:.1f}, ratio {ar / al:.3f}, anchor bandwidth ceiling "
        f"{ceiling:.1f} per stream-step; goal >= 1.0), load {load:.2f}"
    )
    print(
        f"{args.streams}-stream worst TTFT = {tr:.0f} ms (peer llama.cpp server {tl:.0f} ms, "
        f"ratio {tr / tl:.2f}), load {load:.2f}"
    )


async def _one(url: str, headers: dict[str, str]) -> tuple[int, float, float]:
    payload = {k: v for k, v in body(True).items() if v is not None} | {"model": "bench-chat"}
    async with httpx.AsyncClient(headers=headers, timeout=600) as client:
        return await sse_stream(client, url, payload)


if __name__ == "__main__":
    threading.stack_size(8 * 1024 * 1024)
    main()
