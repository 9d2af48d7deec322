"""Any OpenAI-compatible server (vLLM, Ollama, SenseNova's gateway, OpenAI) by configuration alone.

A replica names a ``base_url`` (ending in ``/v1``), the environment variable that holds its key and
the upstream model name; the request body is forwarded as is, with ``model`` replaced. This module
is the boundary for foreign errors: every httpx failure, upstream HTTP error and malformed stream
leaves it as a ``rixin.errors.BackendError`` subclass, with any upstream key scrubbed from the
message. Nothing here follows redirects, so the key only ever travels to the configured host.

Replica ``options`` understood here:

``capabilities``          overrides for ``Capabilities`` (chat defaults: tools and json_schema on)
``headers``               extra, non-secret request headers
``health_path``           probed by ``health()`` (default ``/models``)
``query_prefix``, ``passage_prefix``   prepended to embedding inputs by ``input_type``
``max_event_bytes``       largest SSE event accepted from the upstream (default 16 MiB)
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import itertools
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from rixin.engines.base import (
    Capabilities,
    ChatBody,
    ChatChunk,
    ChatResult,
    CompletionBody,
    CompletionResult,
    EmbeddingResult,
    RerankResult,
)
from rixin.engines.registry import EngineContext
from rixin.errors import BackendError, BackendStatusError, BackendTimeout, ModelUnavailable
from rixin.settings import ReplicaConfig

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 5.0
MAX_ERROR_BODY_BYTES = 64 * 1024
POOL_SHARD = 8
MAX_EVENT_BYTES = 16 * 1024 * 1024
_DRAIN_BYTES = 64 * 1024
_DRAIN_TIMEOUT_S = 1.0
_KEY_PATTERN = re.compile(r"\b(sk-|Bearer\s+)[A-Za-z0-9_\-.*]{4,}")


# --------------------------------------------------------------------------- SSE decoding


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str


class SSEDecoder:
    """An incremental ``text/event-stream`` decoder (WHATWG rules: any line ending, comments,
    multi-line ``data``). Pure and synchronous so it can be fuzzed on its own."""

    _EOL = re.compile(r"\r\n|\r|\n")

    def __init__(self, max_event_chars: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_chars
        self._buf = ""
        self._data: list[str] = []
        self._size = 0
        self._event = ""

    def feed(self, text: str) -> list[ServerSentEvent]:
        """Events completed by ``text``; raises ``ValueError`` past the size limit."""
        self._buf += text
        events: list[ServerSentEvent] = []
        pos = 0
        while (m := self._EOL.search(self._buf, pos)) is not None:
            if m.group() == "\r" and m.end() == len(self._buf):
                break  # may be the first half of "\r\n"
            event = self._line(self._buf[pos : m.start()])
            if event is not None:
                events.append(event)
            pos = m.end()
        self._buf = self._buf[pos:]
        if len(self._buf) + self._size > self._max:
            raise ValueError(f"server-sent event larger than {self._max} characters")
        return events

    def end(self) -> list[ServerSentEvent]:
        """Flush at end of input; an event without its closing blank line is dropped (spec)."""
        events = self.feed("\n") if self._buf.endswith("\r") else []
        self._buf, self._data, self._size, self._event = "", [], 0, ""
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerSentEvent(self._event or "message", "\n".join(self._data))
            self._data, self._size, self._event = [], 0, ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
            self._size += len(value) + 1
        elif name == "event":
            self._event = value
        return None


# --------------------------------------------------------------------------- HTTP transport


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class _Upstream:
    """One upstream server: a pooled ``httpx.AsyncClient`` plus error mapping and redaction."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None,
        timeout_s: float,
        max_connections: int,
        headers: Mapping[str, str] | None = None,
        health_path: str = "/models",
        max_event_bytes: int = MAX_EVENT_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._key = api_key
        self._timeout_s = timeout_s
        self._health_path = health_path
        self._max_event = max_event_bytes
        all_headers = dict(headers or {})
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        # httpcore scans every pooled connection (a poll() each) on every request, so one big
        # pool costs O(connections) per request: shard it into pools of at most POOL_SHARD.
        shards = -(-max(1, max_connections) // POOL_SHARD)
        per_shard = -(-max(1, max_connections) // shards)
        self._clients = [
            httpx.AsyncClient(
                base_url=base_url.rstrip("/"),
                headers=all_headers,
                timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
                limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
                follow_redirects=False,
                trust_env=False,  # no .netrc credentials, no proxy from a stray environment
                transport=transport,
            )
            for _ in range(shards)
        ]
        self._turn = itertools.cycle(self._clients)

    def _client(self) -> httpx.AsyncClient:
        """The next pool shard, in turn."""
        return next(self._turn)

    def redact(self, text: str) -> str:
        if self._key:
            text = text.replace(self._key, "***")
        return _KEY_PATTERN.sub(r"\1***", text)

    async def post(self, path: str, body: dict[str, Any], *, expect: str) -> dict[str, Any]:
        """POST ``body`` as JSON; the answer must be an object with the field ``expect``."""
        try:
            async with asyncio.timeout(self._timeout_s):  # httpx's read timeout is per read
                resp = await self._client().post(path, json=body)
            if resp.is_error or resp.is_redirect:
                raise self._status_error(resp, resp.content[:MAX_ERROR_BODY_BYTES])
            data = resp.json()
        except TimeoutError as exc:
            raise BackendTimeout(f"{self.name}: upstream timed out (deadline)") from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        except ValueError as exc:
            raise BackendError(f"{self.name}: upstream answered with invalid JSON") from exc
        if not isinstance(data, dict) or expect not in data:
            raise BackendError(f"{self.name}: upstream answer has no {expect!r} field")
        return data

    async def events(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The JSON objects of an SSE response until ``[DONE]``; closing the iterator closes the
        upstream connection at once, so the upstream sees the client's disconnect."""
        try:
            async with self._client().stream("POST", path, json=body) as resp:
                if resp.is_error or resp.is_redirect:
                    raise self._status_error(resp, await _read_capped(resp))
                async with aclosing(self._decode(resp)) as objects:
                    async for obj in objects:
                        yield obj
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc

    async def _decode(self, resp: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
        decoder = SSEDecoder(self._max_event)
        text = codecs.getincrementaldecoder("utf-8")()
        finished = False
        chunks = resp.aiter_bytes()
        try:
            async for raw in chunks:
                for event in decoder.feed(text.decode(raw)):
                    if event.data.strip() == "[DONE]":
                        await _drain(chunks)
                        return
                    obj = self._event_object(event)
                    finished = finished or _has_finish_reason(obj)
                    yield obj
            for event in decoder.end():
                if event.data.strip() == "[DONE]":
                    return
                yield self._event_object(event)
        except ValueError as exc:  # UnicodeDecodeError and the decoder's size limit
            raise BackendError(f"{self.name}: malformed upstream stream ({exc})") from exc
        if not finished:
            raise BackendError(f"{self.name}: upstream stream ended before [DONE]")

    def _event_object(self, event: ServerSentEvent) -> dict[str, Any]:
        try:
            obj = json.loads(event.data)
        except ValueError as exc:
            raise BackendError(f"{self.name}: upstream sent an invalid JSON chunk") from exc
        if not isinstance(obj, dict):
            raise BackendError(f"{self.name}: upstream sent a chunk that is not an object")
        if event.event == "error" or "error" in obj or obj.get("object") == "error":
            detail = obj.get("error", obj)
            message = detail.get("message") if isinstance(detail, dict) else detail
            raise BackendError(
                f"{self.name}: upstream failed mid-stream: {self.redact(str(message))[:500]}"
            )
        return obj

    async def health(self) -> bool:
        """The server answers its health path with anything but a 5xx or an auth failure."""
        try:
            resp = await self._client().get(
                self._health_path, timeout=min(HEALTH_TIMEOUT_S, self._timeout_s)
            )
        except httpx.HTTPError:
            return False
        return resp.status_code < 500 and resp.status_code not in (401, 403)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    def _status_error(self, resp: httpx.Response, raw: bytes) -> BackendStatusError:
        body: dict[str, object] = {}
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, dict):
                body = parsed
        except ValueError:
            pass
        detail = body.get("error", body)
        message = detail.get("message") if isinstance(detail, dict) else detail
        if not message:
            message = raw[:200].decode("utf-8", "replace") or resp.reason_phrase
        message = self.redact(str(message))[:1000]
        if isinstance(detail, dict) and "message" in detail:
            detail["message"] = message
        return BackendStatusError(
            f"{self.name}: upstream returned HTTP {resp.status_code}: {message}",
            upstream_status=resp.status_code,
            retry_after=parse_retry_after(resp.headers),
            upstream_body=body,
        )

    def _transport_error(self, exc: httpx.HTTPError) -> BackendError:
        kind = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(f"{self.name}: upstream timed out ({kind})")
        if isinstance(exc, httpx.ConnectError):
            return BackendError(f"{self.name}: cannot connect to upstream ({kind})")
        return BackendError(f"{self.name}: upstream connection failed ({kind})")


async def _read_capped(resp: httpx.Response) -> bytes:
    buf = bytearray()
    async for chunk in resp.aiter_bytes():
        buf += chunk
        if len(buf) >= MAX_ERROR_BODY_BYTES:
            break
    return bytes(buf[:MAX_ERROR_BODY_BYTES])


def _has_finish_reason(obj: dict[str, Any]) -> bool:
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return "usage" in obj
    return any(isinstance(c, dict) and c.get("finish_reason") for c in choices) or (
        not choices and "usage" in obj
    )


# --------------------------------------------------------------------------- models


class _Remote:
    """What the three model kinds share: a name, capabilities and an upstream."""

    def __init__(
        self, upstream: _Upstream, *, upstream_model: str | None, capabilities: Capabilities
    ) -> None:
        self._up = upstream
        self._model = upstream_model
        self.name = upstream.name
        self.capabilities = capabilities

    def _body(self, body: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
        out = {**body, **overrides}
        if self._model:
            out["model"] = self._model
        return out

    async def health(self) -> bool:
        return await self._up.health()

    async def aclose(self) -> None:
        await self._up.aclose()


class OpenAICompatChat(_Remote):
    """A ChatModel served by an OpenAI-compatible ``/chat/completions`` and ``/completions``."""

    async def chat(self, body: ChatBody) -> ChatResult:
        return await self._up.post(
            "/chat/completions", self._body(body, stream=False), expect="choices"
        )

    def stream_chat(self, body: ChatBody) -> AsyncIterator[ChatChunk]:
        return self._up.events("/chat/completions", self._body(body, stream=True))

    async def complete(self, body: CompletionBody) -> CompletionResult:
        return await self._up.post("/completions", self._body(body, stream=False), expect="choices")

    def stream_complete(self, body: CompletionBody) -> AsyncIterator[dict[str, Any]]:
        return self._up.events("/completions", self._body(body, stream=True))


class OpenAICompatEmbedding(_Remote):
    """An EmbeddingModel served by ``/embeddings``; vectors come back float32, L2-normalised."""

    def __init__(
        self,
        upstream: _Upstream,
        *,
        upstream_model: str | None,
        capabilities: Capabilities,
        prefixes: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(upstream, upstream_model=upstream_model, capabilities=capabilities)
        self._prefixes = dict(prefixes or {})

    async def embed(self, texts: Sequence[str], *, input_type: str = "passage") -> EmbeddingResult:
        if not texts:
            dims = self.capabilities.embedding_dims or 0
            return EmbeddingResult(np.zeros((0, dims), dtype=np.float32), 0)
        prefix = self._prefixes.get(input_type, "")
        body = self._body({"input": [prefix + t for t in texts], "encoding_format": "float"})
        data = await self._up.post("/embeddings", body, expect="data")
        try:
            rows = sorted(data["data"], key=lambda row: int(row["index"]))
            vectors = np.stack([_vector(row["embedding"]) for row in rows])
            tokens = int((data.get("usage") or {}).get("prompt_tokens", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackendError(f"{self.name}: malformed embeddings response") from exc
        if vectors.shape[0] != len(texts):
            raise BackendError(
                f"{self.name}: upstream returned {vectors.shape[0]} vectors for {len(texts)} inputs"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return EmbeddingResult((vectors / norms).astype(np.float32), tokens)


def _vector(raw: object) -> npt.NDArray[np.float32]:
    if isinstance(raw, str):  # encoding_format=base64, sent by some servers regardless
        return np.frombuffer(base64.b64decode(raw), dtype="<f4").astype(np.float32)
    vec = np.asarray(raw, dtype=np.float32)
    if vec.ndim != 1:
        raise ValueError("embedding is not a flat list")
    return vec


class OpenAICompatRerank(_Remote):
    """A RerankModel served by ``/rerank`` in the Cohere/Jina/vLLM shape."""

    async def rerank(self, query: str, documents: Sequence[str]) -> RerankResult:
        if not documents:
            return RerankResult(scores=[])
        body = self._body({"query": query, "documents": list(documents), "top_n": len(documents)})
        data = await self._up.post("/rerank", body, expect="results")
        scores: list[float | None] = [None] * len(documents)
        try:
            for row in data["results"]:
                scores[int(row["index"])] = float(row["relevance_score"])
            usage = data.get("usage") or {}
            tokens = int(usage.get("prompt_tokens", usage.get("total_tokens", 0)))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise BackendError(f"{self.name}: malformed rerank response") from exc
        if any(s is None for s in scores):
            raise BackendError(f"{self.name}: upstream did not score every document")
        return RerankResult(scores=[s for s in scores if s is not None], prompt_tokens=tokens)


# --------------------------------------------------------------------------- factories


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body), so the connection goes
    back to the pool instead of being closed: a new TCP connection per model step cost ~1 ms.
    A misbehaving upstream that keeps talking gets 64 KiB and 1 s, then the connection closes."""
    seen = 0
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_DRAIN_TIMEOUT_S):
            async for raw in chunks:
                seen += len(raw)
                if seen > _DRAIN_BYTES:
                    return


def _upstream(replica: ReplicaConfig, ctx: EngineContext) -> _Upstream:
    if not replica.base_url:
        raise ModelUnavailable(f"replica backend {replica.backend!r} needs a base_url")
    api_key = None
    if replica.api_key_env:
        api_key = ctx.secrets.get(replica.api_key_env)
        if not api_key:
            raise ModelUnavailable(
                f"the upstream key variable {replica.api_key_env} is not set for "
                f"{replica.upstream_model or replica.backend!r}"
            )
    opts = replica.options
    return _Upstream(
        replica.upstream_model or replica.backend,
        replica.base_url,
        api_key=api_key,
        timeout_s=replica.timeout_s,
        max_connections=replica.max_concurrency + 2,
        headers=opts.get("headers"),
        health_path=str(opts.get("health_path", "/models")),
        max_event_bytes=int(opts.get("max_event_bytes", MAX_EVENT_BYTES)),
    )


def _capabilities(replica: ReplicaConfig, **defaults: Any) -> Capabilities:
    raw = {**defaults, **replica.options.get("capabilities", {})}
    for key in ("matryoshka_dims", "languages"):
        if key in raw:
            raw[key] = tuple(raw[key])
    try:
        return Capabilities(**raw)
    except TypeError as exc:
        raise ModelUnavailable(
            f"invalid capabilities for {replica.upstream_model!r}: {exc}"
        ) from exc


def create_chat(replica: ReplicaConfig, ctx: EngineContext) -> OpenAICompatChat:
    caps = _capabilities(replica, tools=True, json_schema=True)
    return OpenAICompatChat(
        _upstream(replica, ctx), upstream_model=replica.upstream_model, capabilities=caps
    )


def create_embedding(replica: ReplicaConfig, ctx: EngineContext) -> OpenAICompatEmbedding:
    opts = replica.options
    prefixes = {
        "query": str(opts.get("query_prefix", "")),
        "passage": str(opts.get("passage_prefix", "")),
    }
    return OpenAICompatEmbedding(
        _upstream(replica, ctx),
        upstream_model=replica.upstream_model,
        capabilities=_capabilities(replica, streaming=False),
        prefixes=prefixes,
    )


def create_rerank(replica: ReplicaConfig, ctx: EngineContext) -> OpenAICompatRerank:
    return OpenAICompatRerank(
        _upstream(replica, ctx),
        upstream_model=replica.upstream_model,
        capabilities=_capabilities(replica, streaming=False),
    )
