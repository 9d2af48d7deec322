"""Router: admission, balancing, error-class failover and cooldown (RELIABILITY F1–F3, L2).

Logic is driven with in-process fake backends and a fake clock; F1 and F3 run again through
OpenAICompatChat against two real fake upstreams on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from rixin.engines.openai_compat import OpenAICompatChat, create_chat
from rixin.engines.registry import EngineContext
from rixin.engines.router import Replica, Router
from rixin.errors import (
    BackendError,
    BackendStatusError,
    BackendTimeout,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    ShuttingDown,
)
from rixin.settings import ReplicaConfig, RouterConfig
from rixin.testing.fake_upstream import FakeUpstream

CONFIG = RouterConfig(
    failure_window_s=30, failure_threshold=0.5, min_requests_in_window=4, cooldown_s=5
)
BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBackend:
    """A backend whose failures, pace and health a test sets directly."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fail: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.delay = 0.0
        self.healthy = True
        self.calls = 0
        self.active = 0
        self.peak = 0
        self.closed = False
        self.streams_closed = 0

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            return {"from": self.name}
        finally:
            self.active -= 1

    async def stream(self, n: int, fail_after: int | None = None) -> AsyncIterator[int]:
        self.calls += 1
        try:
            if self.fail is not None:
                raise self.fail
            for i in range(n):
                if fail_after == i:
                    raise BackendError("mid-stream failure")
                yield i
        finally:
            self.streams_closed += 1

    async def health(self) -> bool:
        return self.healthy

    async def aclose(self) -> None:
        self.closed = True


def make_router(
    *backends: FakeBackend,
    config: RouterConfig = CONFIG,
    max_queue: int = 8,
    max_concurrency: int = 4,
    weights: tuple[float, ...] | None = None,
    clock: FakeClock | None = None,
) -> Router[FakeBackend]:
    replicas = [
        Replica(b.name, b, weight=(weights[i] if weights else 1.0), max_concurrency=max_concurrency)
        for i, b in enumerate(backends)
    ]
    return Router("m", replicas, config, max_queue=max_queue, clock=clock or FakeClock())


def status_error(status: int, **kw: Any) -> BackendStatusError:
    return BackendStatusError(f"upstream said {status}", upstream_status=status, **kw)


async def ask(router: Router[Any]) -> str:
    routed = await router.call(lambda b: b.chat(BODY))
    return routed.replica


def state(router: Router[Any], name: str) -> dict[str, Any]:
    return next(r for r in router.snapshot()["replicas"] if r["name"] == name)


def available(router: Router[Any], name: str) -> bool:
    return bool(state(router, name)["available"])


# --------------------------------------------------------------------------- F1


async def test_f1_failover_cooldown_and_recovery():
    a, b, clock = FakeBackend("a"), FakeBackend("b"), FakeClock()
    router = make_router(a, b, clock=clock)
    a.fail = status_error(500, upstream_body={"error": {"message": "boom sk-secret"}})

    served = [await ask(router) for _ in range(3)]
    assert served == ["b"] * 3
    assert a.calls >= 1 and available(router, "a"), "not excluded after the first failure"
    while a.calls < 4:
        assert await ask(router) == "b"
    assert not available(router, "a"), "excluded once > 50 % of >= 4 requests failed"
    for _ in range(10):
        assert await ask(router) == "b"
    assert a.calls == 4

    clock.advance(CONFIG.cooldown_s + 0.1)
    a.fail = None
    served = [await ask(router) for _ in range(4)]
    assert "a" in served, "re-admitted after the cooldown"
    assert state(router, "a")["failures_in_window"] == 0

    a.fail = b.fail = status_error(503, upstream_body={"error": {"message": "boom sk-secret"}})
    with pytest.raises(Overloaded) as info:
        await ask(router)
    exc = info.value
    assert exc.status_code == 503
    assert 1 <= int(exc.headers["Retry-After"]) <= 60
    assert "boom" not in str(exc.body()) and "sk-secret" not in str(exc.body())


async def test_f1_half_open_replica_is_cooled_again_by_one_failure():
    a, b, clock = FakeBackend("a"), FakeBackend("b"), FakeClock()
    router = make_router(a, b, clock=clock, weights=(100.0, 1.0))
    a.fail = BackendError("down")
    for _ in range(4):
        await ask(router)
    assert not available(router, "a")
    clock.advance(CONFIG.cooldown_s + 0.1)
    assert available(router, "a")
    await ask(router)  # the probe goes to a (heavier weight) and fails
    assert a.calls == 5
    assert not available(router, "a")


async def test_f1_failures_at_exactly_half_do_not_cool_down():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, weights=(100.0, 1.0))
    for i in range(4):
        a.fail = BackendError("down") if i % 2 else None
        await ask(router)
    assert available(router, "a")


async def test_f1_failover_cooldown_and_recovery_over_http(upstreams: tuple[FakeUpstream, ...]):
    fake_a, fake_b = upstreams
    clock = FakeClock()
    router = http_router(upstreams, CONFIG, clock=clock, timeout_s=2.0)
    try:
        fake_a.behaviour.status = 500
        served = [await ask(router) for _ in range(12)]
        assert served == ["b"] * 12
        assert fake_a.stats.requests == 4, "A excluded after 4 of 4 failed, not after the first"

        clock.advance(CONFIG.cooldown_s + 0.1)
        fake_a.behaviour.status = 200
        served = [await ask(router) for _ in range(4)]
        assert "a" in served

        fake_a.behaviour.status = fake_b.behaviour.status = 500
        with pytest.raises(Overloaded) as info:
            await ask(router)
        assert "fake upstream error" not in str(info.value.body())
        assert "Retry-After" in info.value.headers
    finally:
        await router.aclose()


# --------------------------------------------------------------------------- F2


async def test_f2_error_class_routing_429():
    a, b, clock = FakeBackend("a"), FakeBackend("b"), FakeClock()
    router = make_router(a, b, clock=clock, weights=(100.0, 1.0))
    a.fail = status_error(429, retry_after=3.0)
    assert await ask(router) == "b"
    assert a.calls == 1
    for _ in range(5):
        assert await ask(router) == "b"
    clock.advance(2.9)
    assert await ask(router) == "b"
    assert a.calls == 1, "no traffic to A during its Retry-After"
    clock.advance(0.2)
    a.fail = None
    assert await ask(router) == "a"


async def test_f2_429_without_retry_after_uses_the_configured_cooldown():
    a, clock = FakeBackend("a"), FakeClock()
    router = make_router(a, clock=clock)
    a.fail = status_error(429)
    with pytest.raises(Overloaded) as info:
        await ask(router)
    assert info.value.retry_after == pytest.approx(CONFIG.cooldown_s)


async def test_f2_error_class_routing_401(caplog: pytest.LogCaptureFixture):
    a, b, clock = FakeBackend("a"), FakeBackend("b"), FakeClock()
    router = make_router(a, b, clock=clock, weights=(100.0, 1.0))
    a.fail = status_error(401, upstream_body={"error": {"message": "bad key sk-abcdef123456"}})
    with caplog.at_level(logging.WARNING, logger="rixin.engines.router"):
        for _ in range(5):
            assert await ask(router) == "b"
    assert a.calls == 1, "cooled down at once: at most one attempt"
    assert not available(router, "a")
    assert any("credentials" in r.getMessage() for r in caplog.records)
    assert "sk-abcdef123456" not in caplog.text

    clock.advance(CONFIG.cooldown_s + 1)
    a.healthy = False
    await router.check_health()
    assert not available(router, "a"), "still out: long cooldown and failing health check"
    a.fail, a.healthy = None, True
    await router.check_health()
    assert available(router, "a"), "a passing health check re-admits it"


async def test_f2_error_class_routing_context_length():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, weights=(100.0, 1.0))
    body = {"error": {"message": "maximum context length is 4096 tokens", "param": "messages",
                      "code": "context_length_exceeded"}}  # fmt: skip
    a.fail = status_error(400, upstream_body=body)
    with pytest.raises(ContextLengthExceeded) as info:
        await ask(router)
    assert info.value.status_code == 400
    assert info.value.param == "messages"
    assert "4096" in info.value.message
    assert (a.calls, b.calls) == (1, 0), "never retried"
    assert state(router, "a")["failures_in_window"] == 0


async def test_f2_other_client_errors_become_invalid_request_with_param():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, weights=(100.0, 1.0))
    body = {"error": {"message": "temperature must be <= 2", "param": "temperature"}}
    a.fail = status_error(422, upstream_body=body)
    with pytest.raises(InvalidRequest) as info:
        await ask(router)
    assert type(info.value) is InvalidRequest
    assert info.value.param == "temperature"
    assert b.calls == 0


async def test_f2_rixin_errors_from_a_backend_pass_through_untouched():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, weights=(100.0, 1.0))
    original = InvalidRequest("bad tool schema", param="tools")
    a.fail = original
    with pytest.raises(InvalidRequest) as info:
        await ask(router)
    assert info.value is original
    assert b.calls == 0


# --------------------------------------------------------------------------- F3


async def test_f3_hung_backend_fails_over():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, weights=(100.0, 1.0))
    a.delay, a.fail = 0.2, BackendTimeout("timed out")  # what a client timeout of 0.2 s raises
    started = time.monotonic()
    assert await ask(router) == "b"
    assert time.monotonic() - started < 0.2 + 1.0


async def test_f3_hung_backend_fails_over_over_http(upstreams: tuple[FakeUpstream, ...]):
    fake_a, fake_b = upstreams
    timeout = 0.2
    never_cool = RouterConfig(failure_threshold=1.0, min_requests_in_window=1)
    # A's short timeout detects the hang; B's generous one keeps a loaded CI machine from
    # turning slow successes into failures.
    router = http_router(upstreams, never_cool, timeout_s=(timeout, 10.0), max_concurrency=10)
    batch = 20

    async def timed() -> tuple[str, float]:
        started = time.monotonic()
        replica = await ask(router)
        return replica, time.monotonic() - started

    try:
        await asyncio.gather(*(timed() for _ in range(batch)))  # warm both connection pools
        fds, tasks = open_fds(), len(asyncio.all_tasks())
        fake_a.behaviour.hang = True
        hangs_before = fake_a.stats.requests
        while fake_a.stats.requests - hangs_before < 100:
            results = await asyncio.gather(*(timed() for _ in range(batch)))
            assert {replica for replica, _ in results} == {"b"}
            assert max(latency for _, latency in results) < timeout + 1.0
        assert await asyncio.to_thread(fake_a.stats.wait_idle, 2.0)
        assert len(asyncio.all_tasks()) == tasks
        deadline = time.monotonic() + 5.0
        while open_fds() > fds and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert open_fds() <= fds, "sockets of hung requests were all closed"
    finally:
        await router.aclose()


# --------------------------------------------------------------------------- L2


async def test_l2_admission_rejects_fast_and_bounds_queue():
    a, b = FakeBackend("a"), FakeBackend("b")
    gate = asyncio.Event()
    a.gate = b.gate = gate
    router = make_router(a, b, max_concurrency=2, max_queue=4)
    capacity = 2 * 2 + 4
    rejected_after: list[float] = []

    async def one() -> str:
        started = time.monotonic()
        try:
            return await ask(router)
        except Overloaded:
            rejected_after.append(time.monotonic() - started)
            raise

    tasks = [asyncio.create_task(one()) for _ in range(3 * capacity)]
    done, _ = await asyncio.wait(tasks, timeout=0.1)  # the backend never answers meanwhile
    assert len(done) == 2 * capacity
    assert max(rejected_after) < 0.1
    for task in done:
        exc = task.exception()
        assert isinstance(exc, Overloaded)
        assert exc.status_code == 503 and 1 <= int(exc.headers["Retry-After"]) <= 60
        assert exc.body()["error"]["code"] == "overloaded"
    snap = router.snapshot()
    assert snap["queued"] == 4 and snap["queued_peak"] == 4
    assert a.calls + b.calls == 4, "rejected and queued requests did no model work"

    gate.set()
    results = await asyncio.gather(*(t for t in tasks if t not in done))
    assert len(results) == capacity
    assert a.calls + b.calls == capacity
    assert a.peak <= 2 and b.peak <= 2
    assert router.snapshot()["queued_peak"] == 4


async def test_l2_every_replica_cooled_is_rejected_at_once_with_retry_after():
    a, b, clock = FakeBackend("a"), FakeBackend("b"), FakeClock()
    router = make_router(a, b, clock=clock)
    a.fail = b.fail = status_error(429, retry_after=7.0)
    with pytest.raises(Overloaded):
        await ask(router)
    clock.advance(2.0)
    with pytest.raises(Overloaded, match="no healthy replica") as info:
        await ask(router)
    assert info.value.retry_after == pytest.approx(5.0)
    assert a.calls + b.calls == 2


async def test_l2_queued_request_fails_fast_when_its_replicas_cool_down():
    a, clock = FakeBackend("a"), FakeClock()
    router = make_router(a, clock=clock, max_concurrency=1, max_queue=2)
    a.gate = asyncio.Event()
    first = asyncio.create_task(ask(router))
    await asyncio.sleep(0)
    queued = asyncio.create_task(ask(router))
    await asyncio.sleep(0)
    assert router.snapshot()["queued"] == 1
    a.fail = status_error(429, retry_after=30.0)
    a.gate.set()
    with pytest.raises(Overloaded):
        await first
    with pytest.raises(Overloaded):
        await queued
    assert a.calls == 1


async def test_l2_cancelled_queued_request_leaves_no_trace():
    a = FakeBackend("a")
    a.gate = asyncio.Event()
    router = make_router(a, max_concurrency=1, max_queue=1)
    running = asyncio.create_task(ask(router))
    await asyncio.sleep(0)
    queued = asyncio.create_task(ask(router))
    await asyncio.sleep(0)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert router.snapshot()["queued"] == 0
    a.gate.set()
    assert await running == "a"
    assert state(router, "a")["in_flight"] == 0
    assert await ask(router) == "a"


# --------------------------------------------------------------------------- balancing


async def test_weights_share_sequential_traffic():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, weights=(3.0, 1.0))
    served = Counter([await ask(router) for _ in range(40)])
    assert served == {"a": 30, "b": 10}


async def test_least_in_flight_wins_under_concurrency():
    a, b = FakeBackend("a"), FakeBackend("b")
    gate = asyncio.Event()
    a.gate = b.gate = gate
    router = make_router(a, b, weights=(100.0, 1.0))
    tasks = [asyncio.create_task(ask(router)) for _ in range(6)]
    await asyncio.sleep(0)
    assert (a.active, b.active) == (3, 3)
    gate.set()
    await asyncio.gather(*tasks)


# --------------------------------------------------------------------------- streams


async def test_stream_fails_over_before_the_first_item_and_holds_its_slot():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, weights=(100.0, 1.0))
    a.fail = BackendError("refused")
    stream = await router.open_stream(lambda be: be.stream(3))
    assert stream.replica == "b"
    assert state(router, "b")["in_flight"] == 1
    assert [i async for i in stream] == [0, 1, 2]
    assert state(router, "b")["in_flight"] == 0


async def test_stream_error_after_the_first_item_propagates_without_failover():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, weights=(100.0, 1.0))
    stream = await router.open_stream(lambda be: be.stream(5, fail_after=2))
    received = []
    with pytest.raises(BackendError, match="mid-stream"):
        async for item in stream:
            received.append(item)
    assert received == [0, 1]
    assert (a.calls, b.calls) == (1, 0)
    assert state(router, "a")["in_flight"] == 0
    assert state(router, "a")["failures_in_window"] == 1


async def test_closing_a_stream_closes_the_backend_iterator_and_frees_the_slot():
    a = FakeBackend("a")
    router = make_router(a)
    stream = await router.open_stream(lambda be: be.stream(100))
    assert await anext(stream) == 0
    assert await anext(stream) == 1
    await stream.aclose()
    assert a.streams_closed == 1
    assert state(router, "a")["in_flight"] == 0


async def test_stream_client_error_before_first_item_is_not_retried():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, weights=(100.0, 1.0))
    a.fail = status_error(400, upstream_body={"error": {"message": "context length exceeded"}})
    with pytest.raises(ContextLengthExceeded):
        await router.open_stream(lambda be: be.stream(3))
    assert b.calls == 0


async def test_f1_stream_through_http_router_closes_upstream(upstreams: tuple[FakeUpstream, ...]):
    fake_a, fake_b = upstreams
    fake_a.behaviour.status = 500
    fake_b.behaviour.tokens_per_s = 50
    router = http_router(upstreams, CONFIG, timeout_s=2.0)
    try:
        stream = await router.open_stream(lambda be: be.stream_chat(BODY))
        assert stream.replica == "b"
        await anext(stream)
        await stream.aclose()
        assert await asyncio.to_thread(fake_b.stats.wait_cancelled, 1, 1.0)
        assert state(router, "b")["in_flight"] == 0
    finally:
        await router.aclose()


# --------------------------------------------------------------------------- lifecycle


async def test_health_loop_marks_replicas_and_aclose_shuts_down():
    a, b = FakeBackend("a"), FakeBackend("b")
    router = make_router(a, b, config=RouterConfig(health_check_interval_s=0.01))
    a.healthy = False
    await router.start()
    deadline = time.monotonic() + 2.0
    while available(router, "a") and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not available(router, "a")
    assert await ask(router) == "b"
    await router.aclose()
    assert a.closed and b.closed
    with pytest.raises(ShuttingDown):
        await ask(router)


async def test_all_unhealthy_is_rejected_with_the_health_interval_as_retry_after():
    a = FakeBackend("a")
    router = make_router(a, config=RouterConfig(health_check_interval_s=10))
    a.healthy = False
    await router.check_health()
    with pytest.raises(Overloaded, match="no healthy replica") as info:
        await ask(router)
    assert info.value.retry_after == 10
    assert a.calls == 0


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    fake_a, fake_b = FakeUpstream(), FakeUpstream()
    with fake_a.serve(), fake_b.serve():
        yield fake_a, fake_b


@pytest.fixture
def upstreams(servers: tuple[FakeUpstream, FakeUpstream]) -> tuple[FakeUpstream, FakeUpstream]:
    for fake in servers:
        fake.reset()
    return servers


def http_router(
    fakes: tuple[FakeUpstream, ...],
    config: RouterConfig,
    *,
    timeout_s: float | tuple[float, float],
    clock: FakeClock | None = None,
    max_concurrency: int = 4,
) -> Router[OpenAICompatChat]:
    ctx = EngineContext(models_dir=Path("unused"))
    replicas = []
    timeouts = timeout_s if isinstance(timeout_s, tuple) else (timeout_s, timeout_s)
    for name, fake, timeout in zip("ab", fakes, timeouts, strict=True):
        conf = ReplicaConfig(
            backend="openai_compat",
            base_url=fake.base_url,
            upstream_model="fake-model",
            timeout_s=timeout,
            max_concurrency=max_concurrency,
        )
        replicas.append(Replica(name, create_chat(conf, ctx), 1.0, max_concurrency))
    return Router("m", replicas, config, max_queue=64, clock=clock or FakeClock())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
