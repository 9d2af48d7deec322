"""Admission control and the concurrency cap (RELIABILITY L2), against a slow fake upstream."""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from conftest import fake_models
from openapi_spec import validate_error
from reliability.support import StartRixin
from rixin.testing.fake_upstream import FakeUpstream

MAX_CONCURRENCY = 2
MAX_QUEUE = 2
CAPACITY = MAX_CONCURRENCY + MAX_QUEUE
BURST = 3 * CAPACITY
LATENCY_S = 2.0
# The fake applies its latency to the health probe too; keep probes out of the burst window.
ROUTER = '{"health_check_interval_s": 3600}'
QUEUE_DEPTH = re.compile(r'^rixin_queue_depth\{model="fake-chat"\} (\S+)$', re.MULTILINE)


async def test_l2_burst_beyond_capacity_is_rejected_fast(start_rixin: StartRixin) -> None:
    """L2: a 3× burst: the excess gets 503/429 + Retry-After at once, the rest all complete,
    the upstream never sees more than ``max_concurrency`` and the queue never passes its cap."""
    # A private upstream: the shared one also answers other servers' health probes, which
    # would count in its in-flight figure.
    fake = FakeUpstream()
    with fake.serve() as base_url:
        await _burst(start_rixin, fake, base_url)


async def _burst(start_rixin: StartRixin, fake: FakeUpstream, base_url: str) -> None:
    models = fake_models(base_url, max_concurrency=MAX_CONCURRENCY, max_queue=MAX_QUEUE)
    server = start_rixin(models=models, env={"RIXIN_ROUTER": ROUTER})
    fake.behaviour.latency_s = LATENCY_S
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}
    upstream_peak = 0
    queue_peak = 0.0
    done = asyncio.Event()

    async with httpx.AsyncClient(
        base_url=server.base_url, headers=server.headers(), timeout=30
    ) as client:

        async def one() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            response = await client.post("/v1/chat/completions", json=body)
            return response, time.monotonic() - started

        async def watch_upstream() -> None:
            nonlocal upstream_peak
            while not done.is_set():
                upstream_peak = max(upstream_peak, fake.stats.in_flight)
                await asyncio.sleep(0.005)

        async def watch_queue() -> None:
            nonlocal queue_peak
            while not done.is_set():
                metrics = await client.get("/metrics")
                match = QUEUE_DEPTH.search(metrics.text)
                assert match is not None, metrics.text
                queue_peak = max(queue_peak, float(match.group(1)))
                await asyncio.sleep(0.05)

        watchers = [asyncio.create_task(watch_upstream()), asyncio.create_task(watch_queue())]
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(one() for _ in range(BURST))), timeout=60
            )
        finally:
            done.set()
            await asyncio.gather(*watchers)

    accepted = [(r, t) for r, t in results if r.status_code == 200]
    rejected = [(r, t) for r, t in results if r.status_code != 200]
    assert len(accepted) == CAPACITY, [(r.status_code, round(t, 2), r.text) for r, t in results]
    assert len(rejected) == BURST - CAPACITY
    for response, elapsed in rejected:
        assert response.status_code in (429, 503)
        assert elapsed < 1.0, f"rejection took {elapsed:.2f}s"
        validate_error(response.json())
        assert response.json()["error"]["code"] == "overloaded"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["x-request-id"]
    for response, _ in accepted:
        assert response.json()["choices"][0]["message"]["content"]
    assert upstream_peak <= MAX_CONCURRENCY
    assert queue_peak <= MAX_QUEUE
    # rejected requests did no model work: the upstream saw only the accepted ones
    assert fake.stats.paths["/v1/chat/completions"] == CAPACITY
    assert fake.stats.wait_idle(timeout=5.0)
