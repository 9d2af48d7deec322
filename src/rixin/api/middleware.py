"""The edge of every request, as one pure ASGI middleware (no per-request task, no buffering).

In order: request id, Host allowlist (DNS-rebinding guard on loopback), drain refusal, body-size
limit before parsing (413 from ``Content-Length``; a body without one is read up to the limit
first), metrics.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from rixin.errors import RequestTooLarge, RixinError, ShuttingDown
from rixin.observability import Metrics

log = logging.getLogger("rixin.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "testserver"})
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})


def _internal_error(request_id: str) -> RixinError:
    return RixinError(
        "The server had an error while processing your request. "
        f"Please retry; quote request id {request_id} if it persists."
    )


class EdgeState:
    """Mutable process state the edge consults: draining flips on SIGTERM."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def send_error(send: Send, exc: RixinError, request_id: str) -> None:
    body = json.dumps(exc.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
    ]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        allowed_hosts: frozenset[str] | None,
        state: EdgeState,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = allowed_hosts
        self.state = state
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or f"req_{secrets.token_hex(16)}"
        if len(request_id) > 128 or not request_id.isprintable():
            request_id = f"req_{secrets.token_hex(16)}"
        scope.setdefault("state", {})["request_id"] = request_id
        rejection = self._reject(scope)
        if rejection is not None:
            await send_error(send, rejection, request_id)
            return

        if _header(scope, b"content-length") is None and scope["method"] in (
            "POST",
            "PUT",
            "PATCH",
        ):
            buffered = await self._buffer_chunked(receive)
            if buffered is None:
                await send_error(send, self._too_large(), request_id)
                return
            receive = buffered

        started = time.perf_counter()
        status_holder = [500]
        rid_header = (b"x-request-id", request_id.encode())

        started_response = [False]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                started_response[0] = True
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        self.state.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Unknown errors are 500s, logged with the request id and never shown.
            log.exception("unhandled error", extra={"request_id": request_id})
            if status_holder[0] == 500 and not started_response[0]:
                await send_error(send, _internal_error(request_id), request_id)
        finally:
            self.state.in_flight -= 1
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.observe_request(
                scope["method"], path, status_holder[0], time.perf_counter() - started
            )

    def _reject(self, scope: Scope) -> RixinError | None:
        if self.allowed_hosts is not None:
            host = (_header(scope, b"host") or "").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed_hosts:
                err = RixinError("Host not allowed.", code="host_not_allowed")
                err.status_code, err.error_type = 400, "invalid_request_error"
                return err
        if self.state.draining and scope["path"] not in PUBLIC_PATHS:
            return ShuttingDown("The server is shutting down; retry on another replica.")
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                err = RixinError("Invalid Content-Length header.", code="invalid_body")
                err.status_code, err.error_type = 400, "invalid_request_error"
                return err
            if int(length) > self.max_body_bytes:
                return self._too_large()
        return None

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"Request body exceeds the limit of {self.max_body_bytes} bytes.", param=None
        )

    async def _buffer_chunked(self, receive: Receive) -> Receive | None:
        """Read a body sent without Content-Length, up to the limit; None when it is too big."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def replay_receive() -> Message:
            return replay.pop() if replay else await receive()

        return replay_receive
