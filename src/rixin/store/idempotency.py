"""Stored outcomes of POSTs sent with an ``Idempotency-Key`` (IETF httpapi draft; RELIABILITY D5).

The lookup key is ``(project_id, key)``: two tenants that pick the same key never see each other's
records. For one key:

* first request → ``new``: an ``in_flight`` row is inserted (the primary key makes concurrent
  firsts race-safe); the caller runs the request, then ``complete()`` stores the response, or
  ``abandon()`` deletes the row when no response was produced, so a retry can run;
* a retry after completion → ``replay`` with the stored status, headers and body, byte for byte;
* a retry while the first still runs → ``in_flight`` (the caller answers 409);
* the key reused for another method, path or body → ``mismatch`` (the caller answers 422).

Records expire ``ttl_s`` after creation and are then treated as absent. An ``in_flight`` row older
than ``in_flight_ttl_s`` belongs to a process that died mid-request and is taken over.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.errors import InvalidRequest
from rixin.store.db import Database
from rixin.store.records import IdempotencyRecord, now_s

MAX_KEY_LENGTH = 255
BeginState = Literal["new", "replay", "in_flight", "mismatch"]


@dataclass(frozen=True)
class Begin:
    """What the caller must do with a request that carries an idempotency key."""

    state: BeginState
    status_code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def hash_body(body: bytes) -> str:
    """The fingerprint of a request body that a reused key is compared against."""
    return hashlib.sha256(body).hexdigest()


class IdempotencyStore:
    def __init__(self, db: Database, ttl_s: float, *, in_flight_ttl_s: float = 900.0) -> None:
        self._db = db
        self._ttl_s = int(ttl_s)
        self._in_flight_ttl_s = int(in_flight_ttl_s)

    async def begin(
        self, project_id: str, key: str, method: str, path: str, body_hash: str
    ) -> Begin:
        """Claim ``key`` for this request or report what an earlier request left."""
        _check_key(key)
        async with self._db.session() as session:
            now = now_s()
            record = await self._live(session, project_id, key, now)
            if record is None:
                try:
                    async with session.begin_nested():
                        session.add(self._new_record(project_id, key, method, path, body_hash, now))
                    return Begin("new")
                except IntegrityError:  # a concurrent first request inserted it
                    record = await self._live(session, project_id, key, now)
                    if record is None:
                        return Begin("in_flight")
            return _classify(record, method, path, body_hash)

    async def complete(
        self,
        project_id: str,
        key: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        """Store the response of the request that ``begin()`` answered ``new`` for."""
        async with self._db.session() as session:
            await session.execute(
                update(IdempotencyRecord)
                .where(
                    IdempotencyRecord.project_id == project_id,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.state == "in_flight",
                )
                .values(
                    state="done",
                    status_code=status,
                    response_headers=dict(headers),
                    response_body=bytes(body),
                )
            )

    async def abandon(self, project_id: str, key: str) -> None:
        """Forget an in-flight claim whose request produced no response (a retry may run)."""
        async with self._db.session() as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.project_id == project_id,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.state == "in_flight",
                )
            )

    async def purge_expired(self) -> int:
        """Delete expired records; returns how many. Optional: expired rows are ignored anyway."""
        async with self._db.session() as session:
            result = await session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now_s())
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def _live(
        self, session: AsyncSession, project_id: str, key: str, now: int
    ) -> IdempotencyRecord | None:
        """The record for the key, after deleting it if it has expired or was orphaned."""
        record = await session.scalar(
            select(IdempotencyRecord)
            .where(IdempotencyRecord.project_id == project_id, IdempotencyRecord.key == key)
            .execution_options(populate_existing=True)
        )
        if record is None:
            return None
        orphaned = record.state == "in_flight" and record.created_at + self._in_flight_ttl_s <= now
        if record.expires_at <= now or orphaned:
            await session.delete(record)
            await session.flush()
            return None
        return record

    def _new_record(
        self, project_id: str, key: str, method: str, path: str, body_hash: str, now: int
    ) -> IdempotencyRecord:
        return IdempotencyRecord(
            project_id=project_id,
            key=key,
            method=method.upper(),
            path=path,
            body_hash=body_hash,
            state="in_flight",
            created_at=now,
            expires_at=now + self._ttl_s,
        )


def _classify(record: IdempotencyRecord, method: str, path: str, body_hash: str) -> Begin:
    same = (
        record.method == method.upper()
        and record.path == path
        and hmac.compare_digest(record.body_hash, body_hash)
    )
    if not same:
        return Begin("mismatch")
    if record.state != "done":
        return Begin("in_flight")
    return Begin(
        "replay",
        status_code=record.status_code,
        headers=dict(record.response_headers or {}),
        body=bytes(record.response_body or b""),
    )


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            param="Idempotency-Key",
        )
