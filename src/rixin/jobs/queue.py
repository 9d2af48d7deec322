"""The durable job queue: a ``jobs`` table with leases, retries and idempotent enqueue.

States::

    queued ──claim──▶ running ──complete──▶ succeeded
      ▲                  │ ──fail (attempts left)──▶ queued (run_after = now + back-off)
      │                  │ ──fail (none left / permanent)──▶ failed (last_error)
      └──release─────────┘ ──cancel──▶ cancelled       (queued jobs can be cancelled too)

A claim takes a lease (``lease_owner``, ``lease_expires_at``); the owner extends it with
``heartbeat`` while it works. A worker that dies stops extending it, and once the lease has
expired the job is claimable again, so it is retried, never lost (D6); a job whose lease expired
on its last attempt is marked ``failed`` instead. ``complete``/``fail``/``heartbeat`` only act
while the caller still owns the lease, so a job completes exactly once even when a slow worker
and its successor both ran it. Execution itself is at least once: handlers must be idempotent.

Claims are one write transaction: ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (replicas
never block one another), ``BEGIN IMMEDIATE`` on SQLite (one writer at a time).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, event, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from rixin.errors import InvalidRequest, NotFound
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records import now_s
from rixin.store.records_files import JobRecord

log = logging.getLogger("rixin.jobs")

DEFAULT_LEASE_S = 30.0
DEFAULT_MAX_ATTEMPTS = 3
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
MAX_ERROR_CHARS = 2000
MAX_KEY_CHARS = 255
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
LOST_WORKER_ERROR = "The worker running this job stopped responding (lease expired)."


@dataclass(frozen=True)
class Job:
    """A snapshot of one job row."""

    id: str
    project_id: str
    kind: str
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    run_after: float
    lease_owner: str | None
    lease_expires_at: float | None
    idempotency_key: str | None
    last_error: str | None
    progress: dict[str, Any]
    result: dict[str, Any] | None
    created_at: int
    updated_at: int
    finished_at: int | None


def _snapshot(record: JobRecord) -> Job:
    return Job(
        id=record.id,
        project_id=record.project_id,
        kind=record.kind,
        payload=dict(record.payload or {}),
        state=record.state,
        attempts=record.attempts,
        max_attempts=record.max_attempts,
        run_after=record.run_after,
        lease_owner=record.lease_owner,
        lease_expires_at=record.lease_expires_at,
        idempotency_key=record.idempotency_key,
        last_error=record.last_error,
        progress=dict(record.progress or {}),
        result=dict(record.result) if record.result is not None else None,
        created_at=record.created_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
    )


class JobQueue:
    """Enqueue, claim, heartbeat, complete, fail, release and cancel jobs in ``db``."""

    def __init__(
        self,
        db: Database,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.lease_s = lease_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self._listeners: list[Callable[[], None]] = []

    # -- producers -------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each enqueue commits (the worker pool's wake-up)."""
        self._listeners.append(callback)

    def notify(self) -> None:
        for callback in self._listeners:
            callback()

    async def enqueue(
        self,
        project_id: str,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        delay_s: float = 0.0,
        session: AsyncSession | None = None,
    ) -> Job:
        """Add a job; with ``idempotency_key`` an existing (project, kind, key) job is returned.

        Pass ``session`` to enqueue in the same transaction as the rows the job works on (the
        job then exists exactly when they do); workers are woken when that session commits.
        """
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY_CHARS:
            raise InvalidRequest("idempotency_key must be 1-255 characters.", param="key")
        if max_attempts < 1:
            raise InvalidRequest("max_attempts must be at least 1.", param="max_attempts")
        if session is not None:
            job = await self._enqueue(
                session, project_id, kind, payload, idempotency_key, max_attempts, delay_s
            )
            event.listen(session.sync_session, "after_commit", self._after_commit, once=True)
            return job
        async with self.db.session() as own:
            job = await self._enqueue(
                own, project_id, kind, payload, idempotency_key, max_attempts, delay_s
            )
        self.notify()
        return job

    def _after_commit(self, _session: Session) -> None:
        self.notify()

    async def _enqueue(
        self,
        session: AsyncSession,
        project_id: str,
        kind: str,
        payload: dict[str, Any] | None,
        key: str | None,
        max_attempts: int,
        delay_s: float,
    ) -> Job:
        now = now_s()
        values = {
            "id": new_id("job"),
            "project_id": project_id,
            "kind": kind,
            "payload": payload or {},
            "state": "queued",
            "attempts": 0,
            "max_attempts": max_attempts,
            "run_after": self.clock() + max(0.0, delay_s),
            "idempotency_key": key,
            "progress": {},
            "created_at": now,
            "updated_at": now,
        }
        insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        statement = insert(JobRecord).values(**values)
        if key is not None:
            statement = statement.on_conflict_do_nothing(
                index_elements=["project_id", "kind", "idempotency_key"]
            )
        await session.execute(statement)
        query = select(JobRecord).execution_options(populate_existing=True)
        if key is None:
            query = query.where(JobRecord.id == values["id"])
        else:
            query = query.where(
                JobRecord.project_id == project_id,
                JobRecord.kind == kind,
                JobRecord.idempotency_key == key,
            )
        record = (await session.scalars(query)).one()
        return _snapshot(record)

    # -- workers ---------------------------------------------------------------------------

    async def claim(
        self, owner: str, kinds: Collection[str] | None = None, *, lease_s: float | None = None
    ) -> Job | None:
        """Lease the next due job (queued, or running with an expired lease), or ``None``."""
        lease = lease_s or self.lease_s
        async with self.db.session() as session:
            for _ in range(100):  # bounded: each pass either claims or fails one lost job
                now = self.clock()
                query = select(JobRecord).where(
                    or_(
                        and_(JobRecord.state == "queued", JobRecord.run_after <= now),
                        and_(JobRecord.state == "running", JobRecord.lease_expires_at < now),
                    )
                )
                if kinds is not None:
                    query = query.where(JobRecord.kind.in_(sorted(kinds)))
                # Fewest attempts first: after a crash loop, the jobs running at each crash
                # (always the oldest) wait behind fresh ones instead of using up their attempts
                # on every restart.
                query = query.order_by(
                    JobRecord.attempts, JobRecord.run_after, JobRecord.created_at, JobRecord.id
                )
                query = query.limit(1).execution_options(populate_existing=True)
                if self.db.dialect == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                record = await session.scalar(query)
                if record is None:
                    return None
                if record.state == "running" and record.attempts >= record.max_attempts:
                    self._finish(record, "failed", error=LOST_WORKER_ERROR)
                    log.warning("job %s failed: worker lost on its last attempt", record.id)
                    await session.flush()
                    continue
                if record.state == "running":
                    log.warning(
                        "job %s: lease of %s expired; retrying", record.id, record.lease_owner
                    )
                    record.last_error = LOST_WORKER_ERROR
                record.state = "running"
                record.attempts += 1
                record.lease_owner = owner
                record.lease_expires_at = now + lease
                record.updated_at = now_s()
                await session.flush()
                return _snapshot(record)
        return None

    async def expire_orphaned_leases(self, host: str) -> int:
        """End the leases of this host's workers whose process is gone (a kill -9 before this
        start), so their jobs are retried now rather than when the lease would have run out.
        Owners are ``host:pid:…``; a live or unknown pid keeps its lease."""
        now = self.clock()
        async with self.db.session() as session:
            running = await session.scalars(
                select(JobRecord).where(
                    JobRecord.state == "running", JobRecord.lease_owner.startswith(f"{host}:")
                )
            )
            expired = 0
            for record in running:
                if _process_gone(str(record.lease_owner).split(":")[1]):
                    record.lease_expires_at = now - 1
                    expired += 1
        if expired:
            self.notify()
        return expired

    async def heartbeat(
        self,
        job_id: str,
        owner: str,
        *,
        lease_s: float | None = None,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        """Extend the lease (and store ``progress``); False when the lease is lost or cancelled."""
        values: dict[str, Any] = {
            "lease_expires_at": self.clock() + (lease_s or self.lease_s),
            "updated_at": now_s(),
        }
        if progress is not None:
            values["progress"] = progress
        return await self._owned_update(job_id, owner, values)

    async def complete(
        self, job_id: str, owner: str, *, result: dict[str, Any] | None = None
    ) -> bool:
        """Mark the job ``succeeded``; False (and no change) unless ``owner`` holds its lease."""
        now = now_s()
        values = {
            "state": "succeeded",
            "result": result,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
            "finished_at": now,
        }
        return await self._owned_update(job_id, owner, values)

    async def release(self, job_id: str, owner: str) -> bool:
        """Give a claimed job back unrun (graceful shutdown): queued again, attempt not counted."""
        values = {
            "state": "queued",
            "attempts": JobRecord.attempts - 1,
            "run_after": self.clock(),
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now_s(),
        }
        return await self._owned_update(job_id, owner, values)

    async def _owned_update(self, job_id: str, owner: str, values: dict[str, Any]) -> bool:
        async with self.db.session() as session:
            result = await session.execute(
                update(JobRecord)
                .where(
                    JobRecord.id == job_id,
                    JobRecord.lease_owner == owner,
                    JobRecord.state == "running",
                )
                .values(**values)
            )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def fail(self, job_id: str, owner: str, error: str, *, retry: bool = True) -> Job | None:
        """Record a failed attempt: queued again after back-off while attempts remain (and
        ``retry``), else ``failed``. ``None`` when ``owner`` no longer holds the lease."""
        async with self.db.session() as session:
            query = select(JobRecord).where(
                JobRecord.id == job_id,
                JobRecord.lease_owner == owner,
                JobRecord.state == "running",
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update()
            record = await session.scalar(query.execution_options(populate_existing=True))
            if record is None:
                return None
            message = error[:MAX_ERROR_CHARS]
            if retry and record.attempts < record.max_attempts:
                record.state = "queued"
                record.run_after = self.clock() + self.backoff(record.attempts)
                record.lease_owner = None
                record.lease_expires_at = None
                record.last_error = message
                record.updated_at = now_s()
            else:
                self._finish(record, "failed", error=message)
            await session.flush()
            return _snapshot(record)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before attempt ``attempts + 1``: exponential, capped."""
        exponent: float = self.backoff_base_s * 2.0 ** max(0, attempts - 1)
        return float(min(self.backoff_max_s, exponent))

    @staticmethod
    def _finish(record: JobRecord, state: str, *, error: str | None = None) -> None:
        now = now_s()
        record.state = state
        record.lease_owner = None
        record.lease_expires_at = None
        record.updated_at = now
        record.finished_at = now
        if error is not None:
            record.last_error = error

    # -- owners of jobs --------------------------------------------------------------------

    async def cancel(self, project_id: str, job_id: str) -> Job:
        """Cancel a queued or running job (a running handler stops at its next heartbeat)."""
        async with self.db.session() as session:
            record = await _job(session, project_id, job_id, lock=True)
            if record.state not in TERMINAL_STATES:
                self._finish(record, "cancelled")
                await session.flush()
            return _snapshot(record)

    async def get(self, project_id: str, job_id: str) -> Job:
        async with self.db.session(readonly=True) as session:
            return _snapshot(await _job(session, project_id, job_id))

    async def find(self, project_id: str, kind: str, idempotency_key: str) -> Job | None:
        """The job enqueued with this key, if any."""
        async with self.db.session(readonly=True) as session:
            record = await session.scalar(
                select(JobRecord).where(
                    JobRecord.project_id == project_id,
                    JobRecord.kind == kind,
                    JobRecord.idempotency_key == idempotency_key,
                )
            )
            return _snapshot(record) if record is not None else None

    async def counts(self, project_id: str | None = None) -> dict[str, int]:
        """Jobs per state (queue depth for metrics and tests)."""
        query = select(JobRecord.state, func.count()).group_by(JobRecord.state)
        if project_id is not None:
            query = query.where(JobRecord.project_id == project_id)
        async with self.db.session(readonly=True) as session:
            rows = (await session.execute(query)).all()
        return {str(state): int(count) for state, count in rows}


async def _job(
    session: AsyncSession, project_id: str, job_id: str, *, lock: bool = False
) -> JobRecord:
    record = None
    if len(job_id) <= 64:
        query = select(JobRecord).where(JobRecord.id == job_id)
        if lock and session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        record = await session.scalar(query.execution_options(populate_existing=True))
    if record is None or record.project_id != project_id:
        raise NotFound(f"No job found with id '{job_id[:64]}'.", param="job_id")
    return record


def _process_gone(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
