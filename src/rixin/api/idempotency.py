"""``Idempotency-Key`` on POSTs (IETF draft-ietf-httpapi-idempotency-key-header-07).

The first request runs; a retry after it completed gets the stored response byte for byte
(success or error); a concurrent duplicate gets 409; the same key with a different payload gets
422. Records are scoped by project, so two tenants' identical keys never meet, and expire after
``settings.idempotency_ttl_s`` (24 h by default). Streamed (SSE) responses are not stored: a retry
of a stream runs again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from rixin.api.middleware import ASGIApp, Message, Receive, Scope, Send, send_error
from rixin.errors import Conflict, IdempotencyKeyMismatch, InvalidRequest, RixinError

if TYPE_CHECKING:
    from rixin.services.container import Services

log = logging.getLogger("rixin.api")

MAX_KEY_LENGTH = 255
MAX_STORED_BODY = 4 * 1024 * 1024


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _idempotency_key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id", "")
        if len(key) > MAX_KEY_LENGTH or not key.isprintable():
            invalid = InvalidRequest(
                f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters.",
                param="Idempotency-Key",
            )
            await send_error(send, invalid, request_id)
            return
        try:
            principal = await self.services.auth.authenticate(_bearer(scope), source=_client(scope))
        except RixinError:
            await self.app(scope, receive, send)  # the route itself answers 401
            return
        body = await _read_body(receive)
        body_hash = hashlib.sha256(body).hexdigest()
        store = self.services.idempotency
        project = principal.project_id
        begin = await store.begin(project, key, scope["method"], scope["path"], body_hash)
        if begin.state == "in_flight":
            error: RixinError = Conflict(
                "A request with this Idempotency-Key is still being processed; retry later.",
                param="Idempotency-Key",
            )
            error.headers["Retry-After"] = "1"
            await send_error(send, error, request_id)
            return
        if begin.state == "mismatch":
            error = IdempotencyKeyMismatch(
                "This Idempotency-Key was used with a different request payload.",
                param="Idempotency-Key",
            )
            await send_error(send, error, request_id)
            return
        if begin.state == "replay":
            await _replay(send, begin.status_code or 200, begin.headers, begin.body)
            return
        await self._run_and_store(scope, body, receive, send, project, key)

    async def _run_and_store(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, project: str, key: str
    ) -> None:
        """Run the request; a storable response is stored *before* it is sent, so that an
        acknowledged response is always the one a retry replays (even after a crash)."""
        store = self.services.idempotency
        captured: dict[str, Any] = {"status": 500, "headers": [], "body": bytearray()}
        held: list[Message] = []  # the response start, held back while the body is stored
        storable = True
        stored = False
        replayed = [False]

        async def replay_receive() -> Message:
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def release() -> None:
            while held:
                await send(held.pop(0))

        async def capture(message: Message) -> None:
            nonlocal storable, stored
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = list(message.get("headers", []))
                headers = dict(captured["headers"])
                # Streams are not stored; neither is anything marked no-store (a new API key).
                storable = not headers.get(b"content-type", b"").startswith(
                    b"text/event-stream"
                ) and b"no-store" not in headers.get(b"cache-control", b"")
                if storable:
                    held.append(message)
                    return
            elif message["type"] == "http.response.body" and storable:
                captured["body"].extend(message.get("body", b""))
                storable = len(captured["body"]) <= MAX_STORED_BODY
                if not storable:  # too big to keep: send what was held and pass through
                    await release()
                    await send({**message, "body": bytes(captured["body"])})
                    return
                if message.get("more_body", False):
                    return
                try:
                    await self._complete(project, key, captured)
                except RixinError:  # the work is done: deliver it; a retry gets 409 for a while
                    log.warning("could not store an idempotent response", exc_info=True)
                stored = True
                await release()
                await send({**message, "body": bytes(captured["body"])})
                return
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        finally:
            if not stored:
                await store.abandon(project, key)

    async def _complete(self, project: str, key: str, captured: dict[str, Any]) -> None:
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in captured["headers"]
            if k.lower() not in (b"x-request-id", b"content-length", b"date")
        }
        await self.services.idempotency.complete(
            project, key, captured["status"], headers, bytes(captured["body"])
        )


def _idempotency_key(scope: Scope) -> str | None:
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    for name, value in scope.get("headers", ()):
        if name == b"idempotency-key":
            return str(value.decode("latin-1")).strip()
    return None


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _replay(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw_headers += [
        (b"content-length", str(len(body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
