"""One served model over N replicas: admission, load balancing, failover and cooldown.

A request first gets a concurrency slot on some replica (``Replica.max_concurrency`` each); when
all are busy it waits in one bounded FIFO queue per model, and when that is full it is refused at
once with ``Overloaded`` (503 + Retry-After) before any model work. Among free replicas the least
utilised wins, ties broken by smooth weighted round robin on ``Replica.weight``.

What a failure does depends on its class:

    BackendStatusError 4xx (not 401/403/408/429)  the request is wrong: ``InvalidRequest`` /
                                                  ``ContextLengthExceeded``, never retried
    BackendStatusError 429                        replica cooled for its Retry-After, fail over
    BackendStatusError 401/403                    replica cooled for a long time (until a health
                                                  check passes), alert logged, fail over
    other BackendError (5xx, timeout, connection) counted in the failure window, fail over
    any other RixinError                          passed through untouched, never retried

Each replica is tried at most once per request. A replica whose failures in the last
``failure_window_s`` exceed ``failure_threshold`` (with at least ``min_requests_in_window``
requests) is cooled down for ``cooldown_s``; afterwards it is re-admitted half-open: one more
failure cools it again, a success clears its window. When no replica could serve a request the
client gets ``Overloaded`` with a Retry-After, never an upstream body.

Streams fail over only until their first item; after that errors propagate to the caller, who
ends the SSE stream with an error event.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from rixin.errors import (
    BackendError,
    BackendStatusError,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    RixinError,
    ShuttingDown,
)
from rixin.settings import RouterConfig

log = logging.getLogger(__name__)

AUTH_COOLDOWN_S = 60.0
"""How long a replica whose upstream rejected our key stays out (or until a health check passes)."""


class Routable(Protocol):
    """What the router needs from a backend; every ChatModel/EmbeddingModel/RerankModel has it."""

    async def health(self) -> bool: ...

    async def aclose(self) -> None: ...


B = TypeVar("B", bound=Routable)
T = TypeVar("T")


@dataclass
class Replica(Generic[B]):
    name: str
    backend: B
    weight: float = 1.0
    max_concurrency: int = 4


@dataclass(frozen=True)
class Routed(Generic[T]):
    """A result and the replica that produced it (for the ``x-rixin-replica`` header)."""

    value: T
    replica: str


class _State:
    """The router's bookkeeping for one replica."""

    def __init__(self, replica: Replica[Any]) -> None:
        self.replica = replica
        self.name = replica.name
        self.in_flight = 0
        self.healthy = True
        self.cooled_until = -math.inf
        self.half_open = False
        self.auth_blocked = False
        self.outcomes: deque[tuple[float, bool]] = deque()
        self.swrr = 0.0

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.cooled_until

    def prune(self, now: float, window: float) -> None:
        while self.outcomes and self.outcomes[0][0] < now - window:
            self.outcomes.popleft()


@dataclass
class _Waiter:
    future: asyncio.Future[_State | None]
    tried: set[str]


class Router(Generic[B]):
    """Routes calls for one model id over its replicas."""

    def __init__(
        self,
        model_id: str,
        replicas: list[Replica[B]],
        config: RouterConfig,
        *,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not replicas:
            raise ValueError(f"model {model_id!r} has no replicas")
        self.model_id = model_id
        self._config = config
        self._max_queue = max_queue
        self._clock = clock
        self._states = [_State(r) for r in replicas]
        self._waiters: deque[_Waiter] = deque()
        self._queued_peak = 0
        self._health_task: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ public API

    async def call(self, op: Callable[[B], Awaitable[T]]) -> Routed[T]:
        """Run ``op`` on one replica, failing over to others on backend failures."""
        tried: set[str] = set()
        last: BackendError | None = None
        while True:
            state = await self._acquire(tried, last)
            try:
                value = await op(state.replica.backend)
            except BaseException as exc:
                try:  # book the failure (and any cooldown) before the slot goes to a waiter
                    last = self._failed(state, exc)
                finally:
                    self._release(state)
                continue
            self._release(state)
            self._succeeded(state)
            return Routed(value, state.name)

    async def open_stream(self, op: Callable[[B], AsyncIterator[T]]) -> RoutedStream[T]:
        """Start ``op`` and pull its first item, failing over until then; the returned stream
        holds the replica's slot until it is exhausted or closed."""
        tried: set[str] = set()
        last: BackendError | None = None
        while True:
            state = await self._acquire(tried, last)
            iterator: AsyncIterator[T] | None = None
            try:
                iterator = op(state.replica.backend)
                first = await anext(iterator)
            except StopAsyncIteration:
                self._release(state)
                self._succeeded(state)
                return RoutedStream(self, state, None, _EMPTY)
            except BaseException as exc:
                try:
                    if iterator is not None:
                        await _close(iterator)
                    last = self._failed(state, exc)
                finally:
                    self._release(state)
                continue
            return RoutedStream(self, state, iterator, first)

    async def start(self) -> None:
        """Start background health checks every ``health_check_interval_s``."""
        if self._health_task is None:
            self._health_task = asyncio.create_task(
                self._health_loop(), name=f"router-health:{self.model_id}"
            )

    async def aclose(self) -> None:
        """Stop health checks, refuse queued and new requests, and close every backend."""
        self._closed = True
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
            self._health_task = None
        self._dispatch()
        results = await asyncio.gather(
            *(s.replica.backend.aclose() for s in self._states), return_exceptions=True
        )
        for state, result in zip(self._states, results, strict=True):
            if isinstance(result, Exception):
                log.warning(
                    "closing replica %s of %s failed: %r", state.name, self.model_id, result
                )

    async def check_health(self) -> None:
        """Probe every replica once (the background loop calls this)."""
        await asyncio.gather(*(self._probe(s) for s in self._states))
        self._dispatch()

    def snapshot(self) -> dict[str, Any]:
        """Queue depth and a list of per-replica states (``name``, ``in_flight``, ``healthy``,
        ``available``, ``cooled_until`` …), for ``/metrics`` and admin views."""
        now = self._clock()
        replicas = []
        for s in self._states:
            s.prune(now, self._config.failure_window_s)
            replicas.append(
                {
                    "name": s.name,
                    "in_flight": s.in_flight,
                    "max_concurrency": s.replica.max_concurrency,
                    "healthy": s.healthy,
                    "available": s.available(now),
                    "cooled_until": s.cooled_until if s.cooled_until > now else None,
                    "cooldown_left_s": max(0.0, s.cooled_until - now),
                    "requests_in_window": len(s.outcomes),
                    "failures_in_window": sum(1 for _, ok in s.outcomes if not ok),
                }
            )
        return {
            "model": self.model_id,
            "queued": len(self._waiters),
            "queued_peak": self._queued_peak,
            "max_queue": self._max_queue,
            "replicas": replicas,
        }

    # ------------------------------------------------------------------ admission

    async def _acquire(self, tried: set[str], last: BackendError | None) -> _State:
        if self._closed:
            raise ShuttingDown(f"model {self.model_id} is shutting down")
        if self._waiters:
            self._dispatch()  # a cooldown may have ended: queued requests go first
        candidates = self._candidates(tried)
        if not candidates:
            raise self._exhausted(tried, last)
        state = self._pick(candidates)
        if state is None:
            state = await self._wait(tried, last)
        tried.add(state.name)
        return state

    async def _wait(self, tried: set[str], last: BackendError | None) -> _State:
        if len(self._waiters) >= self._max_queue:
            raise Overloaded(f"model {self.model_id} is at capacity; retry later", retry_after=1.0)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), tried)
        self._waiters.append(waiter)
        self._queued_peak = max(self._queued_peak, len(self._waiters))
        try:
            state = await waiter.future
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                handed = waiter.future.result()
                if handed is not None:
                    self._release(handed)
            raise
        if state is None:
            if self._closed:
                raise ShuttingDown(f"model {self.model_id} is shutting down")
            raise self._exhausted(tried, last)
        return state

    def _candidates(self, tried: set[str]) -> list[_State]:
        now = self._clock()
        return [s for s in self._states if s.name not in tried and s.available(now)]

    def _pick(self, candidates: list[_State]) -> _State | None:
        """Take a slot on the least utilised free candidate (smooth weighted round robin on
        ties), or None when every candidate is full."""
        free = [s for s in candidates if s.in_flight < s.replica.max_concurrency]
        if not free:
            return None
        low = min(s.in_flight / s.replica.max_concurrency for s in free)
        tied = [s for s in free if s.in_flight / s.replica.max_concurrency <= low + 1e-9]
        total = 0.0
        for s in tied:
            weight = max(s.replica.weight, 1e-6)
            s.swrr += weight
            total += weight
        best = max(tied, key=lambda s: s.swrr)
        best.swrr -= total
        best.in_flight += 1
        return best

    def _release(self, state: _State) -> None:
        state.in_flight -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to queued requests in FIFO order; wake those left without any
        available replica so they fail fast instead of waiting forever."""
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            candidates = [] if self._closed else self._candidates(waiter.tried)
            state = self._pick(candidates) if candidates else None
            if state is None and candidates:
                continue  # still a chance: wait for a slot
            self._waiters.remove(waiter)
            waiter.future.set_result(state)

    # ------------------------------------------------------------------ outcomes

    def _succeeded(self, state: _State) -> None:
        now = self._clock()
        if state.half_open:
            state.outcomes.clear()
            state.half_open = False
        state.outcomes.append((now, True))
        state.prune(now, self._config.failure_window_s)

    def _failed(self, state: _State, exc: BaseException) -> BackendError:
        """Book a failure; return it when the request may fail over, raise when it may not."""
        if not isinstance(exc, Exception):
            raise exc  # cancellation: the request is gone, the replica did nothing wrong
        if isinstance(exc, BackendStatusError) and exc.is_client_error:
            raise _client_error(exc) from exc
        if isinstance(exc, BackendError):
            self._note_backend_error(state, exc)
            return exc
        if not isinstance(exc, RixinError):
            self._record_failure(state)  # a bug in the backend; surface it, don't mask it
        raise exc

    def _note_backend_error(self, state: _State, exc: BackendError) -> None:
        now = self._clock()
        status = exc.upstream_status if isinstance(exc, BackendStatusError) else None
        if isinstance(exc, BackendStatusError) and status == 429:
            wait = exc.retry_after if exc.retry_after is not None else self._config.cooldown_s
            self._cool(state, now + wait)
        elif status in (401, 403):
            state.auth_blocked = True
            self._cool(state, now + max(AUTH_COOLDOWN_S, self._config.cooldown_s))
            log.warning(
                "ALERT model %s replica %s: upstream rejected our credentials (HTTP %s); "
                "replica taken out until a health check passes",
                self.model_id,
                state.name,
                status,
            )
        else:
            self._record_failure(state)

    def _record_failure(self, state: _State) -> None:
        now = self._clock()
        cfg = self._config
        state.outcomes.append((now, False))
        state.prune(now, cfg.failure_window_s)
        failures = sum(1 for _, ok in state.outcomes if not ok)
        total = len(state.outcomes)
        probe_failed = state.half_open and now >= state.cooled_until
        if probe_failed or (
            total >= cfg.min_requests_in_window and failures / total > cfg.failure_threshold
        ):
            state.half_open = True
            self._cool(state, now + cfg.cooldown_s)
            log.warning(
                "model %s replica %s cooled down for %.1fs (%d of %d requests failed)",
                self.model_id,
                state.name,
                cfg.cooldown_s,
                failures,
                total,
            )

    def _cool(self, state: _State, until: float) -> None:
        state.cooled_until = max(state.cooled_until, until)
        self._dispatch()

    def _settle_stream(self, state: _State, exc: BaseException | None) -> None:
        if exc is None:
            self._succeeded(state)
        elif isinstance(exc, BackendError) and not (
            isinstance(exc, BackendStatusError) and exc.is_client_error
        ):
            self._note_backend_error(state, exc)
        self._release(state)

    def _exhausted(self, tried: set[str], last: BackendError | None) -> Overloaded:
        retry_after = self._retry_after()
        if last is None:
            return Overloaded(
                f"no healthy replica for model {self.model_id}", retry_after=retry_after
            )
        log.warning(
            "model %s: every replica failed (%d tried), last error %s",
            self.model_id,
            len(tried),
            _describe(last),
        )
        return Overloaded(
            f"model {self.model_id} is temporarily unavailable; retry later",
            retry_after=retry_after,
        )

    def _retry_after(self) -> float:
        now = self._clock()
        waits = [s.cooled_until - now for s in self._states if s.cooled_until > now]
        if not waits and any(not s.healthy for s in self._states):
            waits.append(self._config.health_check_interval_s)
        return max(1.0, min(waits, default=1.0))

    # ------------------------------------------------------------------ health

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.health_check_interval_s)
            await self.check_health()

    async def _probe(self, state: _State) -> None:
        timeout = max(1.0, self._config.health_check_interval_s)
        try:
            ok = await asyncio.wait_for(state.replica.backend.health(), timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            ok = False
        if ok != state.healthy:
            log.warning(
                "model %s replica %s is %s",
                self.model_id,
                state.name,
                "healthy again" if ok else "unhealthy",
            )
        state.healthy = ok
        if ok and state.auth_blocked:
            state.auth_blocked = False
            state.cooled_until = -math.inf


class _Empty:
    pass


_EMPTY = _Empty()


class RoutedStream(Generic[T]):
    """A backend stream with its first item already pulled; holds the replica's slot until it
    is exhausted or closed. Closing it closes the backend iterator (cancelling generation)."""

    def __init__(
        self,
        router: Router[Any],
        state: _State,
        iterator: AsyncIterator[T] | None,
        first: T | _Empty,
    ) -> None:
        self.replica = state.name
        self._router = router
        self._state = state
        self._iterator = iterator
        self._first = first
        self._done = iterator is None

    def __aiter__(self) -> RoutedStream[T]:
        return self

    async def __anext__(self) -> T:
        if not isinstance(self._first, _Empty):
            item, self._first = self._first, _EMPTY
            return item
        if self._done or self._iterator is None:
            raise StopAsyncIteration
        try:
            return await anext(self._iterator)
        except StopAsyncIteration:
            self._finish(None)
            raise
        except BaseException as exc:
            self._finish(exc)
            raise

    async def aclose(self) -> None:
        if self._done:
            return
        try:
            if self._iterator is not None:
                await _close(self._iterator)
        finally:
            self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        if not self._done:
            self._done = True
            self._first = _EMPTY
            self._router._settle_stream(self._state, exc)

    def __del__(self) -> None:
        if not self._done:  # dropped without aclose(): give the slot back at least
            with suppress(Exception):  # e.g. the event loop is already closed
                log.warning("stream from %s dropped without aclose()", self.replica)
                self._finish(None)


async def _close(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _client_error(exc: BackendStatusError) -> InvalidRequest:
    """The upstream's verdict on a bad request, as our own error (message and param kept)."""
    body = exc.upstream_body
    detail = body.get("error", body)
    detail = detail if isinstance(detail, dict) else {"message": detail}
    message = str(detail.get("message") or "the upstream model rejected the request")[:1000]
    param = detail.get("param")
    param = param if isinstance(param, str) else None
    code = detail.get("code") or detail.get("type")
    if _is_context_length(str(code or ""), message):
        return ContextLengthExceeded(message, param=param or "messages")
    return InvalidRequest(message, param=param)


def _is_context_length(code: str, message: str) -> bool:
    if code in ("context_length_exceeded", "exceed_context_size_error", "context_window_exceeded"):
        return True
    lowered = message.lower()
    return any(
        hint in lowered
        for hint in ("maximum context length", "context length", "context window", "context size")
    )


def _describe(exc: BackendError) -> str:
    if isinstance(exc, BackendStatusError):
        return f"{type(exc).__name__}(HTTP {exc.upstream_status})"
    return type(exc).__name__
