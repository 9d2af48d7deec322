"""A controllable fake OpenAI-compatible upstream, for tests and benchmarks.

It serves ``/v1/chat/completions`` (plain and SSE), ``/v1/completions``, ``/v1/embeddings``
(deterministic vectors from a hash of the text), ``/v1/rerank``, ``/v1/models`` and ``/health`` on
loopback, answers in OpenAI's shapes, and misbehaves on request::

    fake = FakeUpstream()
    with fake.serve() as base_url:                 # "http://127.0.0.1:<port>/v1"
        fake.behaviour.status = 429
        fake.behaviour.retry_after = "3"
        ...                                        # call it
        fake.behaviour.reset_after = 5             # stream 5 chunks, then drop the connection
        assert fake.stats.requests == 2
        assert fake.stats.wait_cancelled(timeout=1.0)   # the client went away mid-answer

``behaviour`` is read per request, so a test may change it while the server runs; ``stats`` are
safe to read from the test's thread. The server runs in a daemon thread with its own event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = ["FakeBehaviour", "FakeStats", "FakeUpstream"]

Produce = Callable[[Send], Awaitable[None]]


@dataclass
class FakeBehaviour:
    """How the fake answers the next requests to ``/v1/*``; every field may change at runtime."""

    status: int = 200
    """Anything but 200 answers with OpenAI's error envelope and this status."""
    retry_after: str | None = None
    """``Retry-After`` header sent with an error status."""
    error_message: str | None = None
    error_code: str | None = None
    error_param: str | None = None
    latency_s: float = 0.0
    """Delay before the answer (before the response headers of a stream)."""
    hang: bool = False
    """Accept the request and never answer (until the client leaves)."""
    reply: str = "Hello! This is the fake upstream answering your request."
    """Assistant text; streamed one word per chunk."""
    tokens_per_s: float | None = None
    """Pace of streamed chunks; ``None`` streams as fast as possible."""
    reset_after: int | None = None
    """Stream this many content chunks, then drop the connection."""
    invalid_json_after: int | None = None
    """Stream this many content chunks, then a chunk that is not JSON."""
    error_event_after: int | None = None
    """Stream this many content chunks, then ``data: {"error": ...}`` and close."""
    stall_after: int | None = None
    """Stream this many content chunks, then go silent (until the client leaves)."""
    embedding_dims: int = 64


class FakeStats:
    """What the fake saw; thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.requests = 0
        """Model-work requests (POSTs); GETs such as health probes count only in ``paths``."""
        self.paths: Counter[str] = Counter()
        self.last_body: dict[str, Any] | None = None
        self.client_ports: list[int] = []
        """The client's TCP port of each request: a repeated port is a reused connection."""
        self.in_flight = 0
        self.completed = 0
        self.cancelled = 0
        """Answers cut short because the client disconnected."""
        self.cancelled_at: list[float] = []
        """``time.monotonic()`` of each disconnect observed."""

    def wait_cancelled(self, count: int = 1, timeout: float = 1.0) -> bool:
        """Block until ``count`` cancellations were observed, or ``timeout`` seconds passed."""
        with self._cond:
            return self._cond.wait_for(lambda: self.cancelled >= count, timeout)

    def wait_idle(self, timeout: float = 1.0) -> bool:
        """Block until no request is being answered."""
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight == 0, timeout)

    def _received(
        self, path: str, body: dict[str, Any] | None, *, work: bool = True, port: int = 0
    ) -> None:
        with self._cond:
            self.client_ports.append(port)
            self.requests += work
            self.paths[path] += 1
            self.last_body = body

    def _begin(self) -> None:
        with self._cond:
            self.in_flight += 1

    def _end(self, *, cancelled: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            if cancelled:
                self.cancelled += 1
                self.cancelled_at.append(time.monotonic())
            else:
                self.completed += 1
            self._cond.notify_all()


class _DropConnection(Exception):
    """Raised after the response started: uvicorn then closes the socket mid-body."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DropConnection))


class FakeUpstream:
    """An OpenAI-compatible server whose answers a test controls through ``behaviour``."""

    def __init__(self, *, models: tuple[str, ...] = ("fake-model",), api_key: str | None = None):
        self.models = models
        self.api_key = api_key
        """When set, ``/v1/*`` requires ``Authorization: Bearer <api_key>``."""
        self.behaviour = FakeBehaviour()
        self.stats = FakeStats()
        self.base_url: str | None = None
        """``http://127.0.0.1:<port>/v1`` while ``serve()`` runs."""
        self._closing: asyncio.Event | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/rerank", self._rerank, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    def reset(self) -> None:
        """Back to a well-behaved server with fresh counters."""
        self.behaviour = FakeBehaviour()
        self.stats = FakeStats()

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Run on ``127.0.0.1:<free port>`` in a background thread; yields the ``/v1`` base URL."""
        logging.getLogger("uvicorn.error").addFilter(_QUIET)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http="h11",
            ws="none",
            loop="asyncio",
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fake-upstream:{port}", daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + 10.0
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the fake upstream did not start")
                time.sleep(0.005)
            self.base_url = f"http://127.0.0.1:{port}/v1"
            yield self.base_url
        finally:
            self.base_url = None
            loop, closing = getattr(self, "_loop", None), self._closing
            if loop is not None and closing is not None and not loop.is_closed():
                with suppress(RuntimeError):
                    loop.call_soon_threadsafe(closing.set)
            server.should_exit = True
            thread.join(timeout=10.0)
            sock.close()

    # ------------------------------------------------------------------ plumbing

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        yield

    async def _receive(self, request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        """The JSON body, or an error response to send instead of the normal answer."""
        body: dict[str, Any] | None = None
        try:
            parsed = await request.json()
            body = parsed if isinstance(parsed, dict) else None
        except ValueError:
            pass
        port = request.client.port if request.client else 0
        self.stats._received(request.url.path, body, port=port)
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            presented = request.headers.get("authorization", "").removeprefix("Bearer ")
            # Echoes the key like careless upstreams do, so tests prove rixin scrubs it.
            return body, _error(401, f"Incorrect API key provided: {presented}", "invalid_api_key")
        if body is None:
            return None, _error(400, "the request body is not a JSON object", "invalid_json")
        return body, None

    def _exchange(self, produce: Produce) -> Response:
        """Answer through ``produce`` after the configured latency, unless the client leaves."""
        beh = self.behaviour

        async def run(send: Send) -> None:
            if beh.hang:
                await asyncio.Event().wait()
            if beh.latency_s:
                await asyncio.sleep(beh.latency_s)
            if beh.status != 200:
                await _send_json(send, _error(beh.status, beh.error_message, beh.error_code, beh))
                return
            await produce(send)

        return _Watched(self, run)

    # ------------------------------------------------------------------ endpoints

    async def _chat(self, request: Request) -> Response:
        body, refusal = await self._receive(request)
        if refusal is not None or body is None:
            return refusal or _error(400, "no body")
        model, words = str(body.get("model", "")), self._words(body)
        if body.get("stream"):
            return self._exchange(lambda send: self._stream(send, body, model, words, chat=True))
        text, finish = "".join(words), self._finish(body, words)
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        result = _envelope("chat.completion", model, [choice], _usage(body, words))
        return self._exchange(lambda send: _send_json(send, JSONResponse(result)))

    async def _completions(self, request: Request) -> Response:
        body, refusal = await self._receive(request)
        if refusal is not None or body is None:
            return refusal or _error(400, "no body")
        model, words = str(body.get("model", "")), self._words(body)
        if body.get("stream"):
            return self._exchange(lambda send: self._stream(send, body, model, words, chat=False))
        choice = {
            "index": 0,
            "text": "".join(words),
            "logprobs": None,
            "finish_reason": self._finish(body, words),
        }
        result = _envelope("text_completion", model, [choice], _usage(body, words))
        return self._exchange(lambda send: _send_json(send, JSONResponse(result)))

    async def _embeddings(self, request: Request) -> Response:
        body, refusal = await self._receive(request)
        if refusal is not None or body is None:
            return refusal or _error(400, "no body")
        raw = body.get("input", [])
        texts = [raw] if isinstance(raw, str) else [str(t) for t in raw]
        dims = int(body.get("dimensions") or self.behaviour.embedding_dims)
        as_b64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vec = embed_text(text, dims)
            emb: Any = (
                base64.b64encode(vec.astype("<f4").tobytes()).decode()
                if as_b64
                else [float(x) for x in vec]
            )
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(t.split()) for t in texts)
        result = {
            "object": "list",
            "data": data,
            "model": body.get("model", ""),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return self._exchange(lambda send: _send_json(send, JSONResponse(result)))

    async def _rerank(self, request: Request) -> Response:
        body, refusal = await self._receive(request)
        if refusal is not None or body is None:
            return refusal or _error(400, "no body")
        query = str(body.get("query", ""))
        docs = [
            d.get("text", "") if isinstance(d, dict) else str(d) for d in body.get("documents", [])
        ]
        scored = sorted(
            ({"index": i, "relevance_score": rerank_score(query, d)} for i, d in enumerate(docs)),
            key=lambda r: -float(r["relevance_score"]),
        )
        top_n = int(body.get("top_n") or len(docs))
        tokens = len(query.split()) * len(docs) + sum(len(d.split()) for d in docs)
        result = {
            "id": f"rerank-fake-{self.stats.requests}",
            "model": body.get("model", ""),
            "usage": {"total_tokens": tokens},
            "results": scored[:top_n],
        }
        return self._exchange(lambda send: _send_json(send, JSONResponse(result)))

    async def _models(self, request: Request) -> Response:
        _, refusal = await self._receive_get(request)
        if refusal is not None:
            return refusal
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"}
            for m in self.models
        ]
        result = {"object": "list", "data": data}
        return self._exchange(lambda send: _send_json(send, JSONResponse(result)))

    async def _receive_get(self, request: Request) -> tuple[None, Response | None]:
        self.stats._received(request.url.path, None, work=False)
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return None, _error(401, "Incorrect API key provided", "invalid_api_key")
        return None, None

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # ------------------------------------------------------------------ generation

    def _words(self, body: dict[str, Any]) -> list[str]:
        words = re.findall(r"\S+\s*", self.behaviour.reply)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        return words[: int(limit)] if isinstance(limit, int) and limit > 0 else words

    def _finish(self, body: dict[str, Any], words: list[str]) -> str:
        return "length" if len(words) < len(re.findall(r"\S+\s*", self.behaviour.reply)) else "stop"

    async def _stream(
        self, send: Send, body: dict[str, Any], model: str, words: list[str], *, chat: bool
    ) -> None:
        beh = self.behaviour
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        kind = "chat.completion.chunk" if chat else "text_completion"

        async def event(data: object) -> None:
            payload = data if isinstance(data, str) else json.dumps(data)
            chunk = f"data: {payload}\n\n".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        def choice(text: str | None, finish: str | None) -> dict[str, Any]:
            if chat:
                delta = {"content": text} if text is not None else {}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

        if chat:
            first = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
            }
            await event(_envelope(kind, model, [first]))
        for i, word in enumerate(words):
            if beh.reset_after == i:
                raise _DropConnection
            if beh.invalid_json_after == i:
                await event('{"id": "broken", "choices": [')
            if beh.error_event_after == i:
                await event({"error": {"message": "upstream failure", "type": "server_error"}})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if beh.stall_after == i:
                await asyncio.Event().wait()
            if beh.tokens_per_s:
                await asyncio.sleep(1.0 / beh.tokens_per_s)
            await event(_envelope(kind, model, [choice(word, None)]))
        await event(_envelope(kind, model, [choice(None, self._finish(body, words))]))
        if (body.get("stream_options") or {}).get("include_usage"):
            await event(_envelope(kind, model, [], _usage(body, words)))
        await event("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


_QUIET = _QuietDrops()


class _Watched(Response):
    """Runs an answer while watching for the client's disconnect and for server shutdown."""

    def __init__(self, fake: FakeUpstream, run: Produce) -> None:
        super().__init__()
        self._fake = fake
        self._run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats, closing = self._fake.stats, self._fake._closing
        stats._begin()
        answer = asyncio.ensure_future(self._run(send))
        left = asyncio.ensure_future(_disconnected(receive))
        stopping = asyncio.ensure_future(closing.wait() if closing else asyncio.Event().wait())
        done: set[asyncio.Future[Any]] = set()
        try:
            done, _ = await asyncio.wait(
                {answer, left, stopping}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (answer, left, stopping):
                task.cancel()
            await asyncio.gather(answer, left, stopping, return_exceptions=True)
            finished = answer in done
            stats._end(cancelled=not finished and left in done)
        error = answer.exception() if finished else None
        if error is not None:
            raise error
        if not finished:
            raise _DropConnection  # the client left or the server stops: close the socket


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_json(send: Send, response: Response) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def _error(
    status: int,
    message: str | None,
    code: str | None = None,
    beh: FakeBehaviour | None = None,
) -> JSONResponse:
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
    error = {
        "message": message or f"fake upstream error {status}",
        "type": kind.get(status, "invalid_request_error" if status < 500 else "server_error"),
        "param": beh.error_param if beh else None,
        "code": code,
    }
    headers = {"retry-after": beh.retry_after} if beh and beh.retry_after else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _envelope(
    kind: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-fake" if kind.startswith("chat") else "cmpl-fake",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def _usage(body: dict[str, Any], words: list[str]) -> dict[str, int]:
    source = body.get("messages") or body.get("prompt") or ""
    prompt = len(json.dumps(source).split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": len(words),
        "total_tokens": prompt + len(words),
    }


def embed_text(text: str, dims: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The fake's deterministic, unnormalised vector for ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32) * 3.0


def rerank_score(query: str, document: str) -> float:
    """The fake's relevance: the share of query words found in the document."""
    q = set(query.lower().split())
    d = set(document.lower().split())
    return round(len(q & d) / len(q), 6) if q else 0.0
