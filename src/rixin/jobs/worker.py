"""In-process worker pool: N async workers claim jobs and run the handler registered per kind.

Idle workers sleep until woken: by this process enqueueing (``JobQueue.add_listener``), by a
busy worker that just claimed (more jobs may be due), or by the pool's one poller every
``poll_interval_s`` (jobs enqueued elsewhere, retries after back-off, expired leases). So an idle
pool costs one claim per interval, however many workers it has.

While a handler runs, its lease is extended every third of the lease; when that fails (the job
was cancelled, or another worker took over after an expiry) the handler is cancelled. Progress a
handler reports is stored by the same heartbeat, at most every ``PROGRESS_INTERVAL_S``: a short
job (most ingested files take under a second) writes no progress at all, where each stage used to
cost a transaction. Handlers are coroutines on the event loop: CPU-heavy ones run their work in
a thread or subprocess themselves (``asyncio.to_thread``), so the loop never blocks.

``stop()`` is graceful: no new claims; running handlers get ``timeout_s`` to finish, then are
cancelled and their jobs released (queued again, the attempt not counted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from rixin.jobs.queue import Job, JobQueue

log = logging.getLogger("rixin.jobs")

PROGRESS_INTERVAL_S = 0.5
"""Reported progress is stored at most this often (and this late) per job."""

Handler = Callable[["JobContext"], Coroutine[Any, Any, dict[str, Any] | None]]
"""A job handler: returns the job's ``result`` (or None); raises to fail the attempt."""


class PermanentJobError(Exception):
    """Raised by a handler for a failure that retrying cannot fix: the job fails at once."""


@dataclass
class JobContext:
    """What a handler gets: its job, and a way to report progress (which also extends the lease)."""

    job: Job
    queue: JobQueue
    owner: str
    lease_s: float
    lost: bool = field(default=False)
    pending: dict[str, Any] | None = field(default=None)
    """Progress reported and not stored yet (the pool's heartbeat stores it)."""

    async def progress(self, progress: dict[str, Any]) -> None:
        """Report ``progress``: stored on the job within ``PROGRESS_INTERVAL_S``. Raises
        ``CancelledError`` when the lease was lost (the job was cancelled or taken over)."""
        if self.lost:
            raise asyncio.CancelledError
        self.pending = progress


class WorkerPool:
    """``concurrency`` workers sharing one queue; ``register(kind, handler)`` before ``start``."""

    def __init__(
        self,
        queue: JobQueue,
        *,
        concurrency: int = 2,
        poll_interval_s: float = 1.0,
        lease_s: float | None = None,
        name: str | None = None,
    ) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.lease_s = lease_s or queue.lease_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._handlers: dict[str, Handler] = {}
        self._idle: list[asyncio.Event] = []
        """Wake-ups of the idle workers, longest idle first."""
        self._tasks: list[asyncio.Task[None]] = []
        self._poller: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
        self._stopping = False
        queue.add_listener(self.wake)

    def register(self, kind: str, handler: Handler) -> None:
        """Run ``handler`` for jobs of ``kind`` (one handler per kind)."""
        if kind in self._handlers:
            raise ValueError(f"a handler for job kind {kind!r} is already registered")
        self._handlers[kind] = handler
        self.wake()

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def wake(self) -> None:
        """Let one idle worker try to claim (a busy one claims again when it finishes)."""
        if self._idle:
            self._idle.pop(0).set()

    async def start(self) -> None:
        if self._tasks:
            return
        self._stopping = False
        await self.queue.expire_orphaned_leases(socket.gethostname())
        self._tasks = [
            asyncio.create_task(self._loop(i), name=f"rixin-worker-{i}")
            for i in range(self.concurrency)
        ]
        self._poller = asyncio.create_task(self._poll(), name="rixin-worker-poll")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop claiming; wait up to ``timeout_s`` for running handlers, then cancel them."""
        self._stopping = True
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        while self._idle:
            self.wake()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        if pending:
            for task in self._running.values():
                task.cancel()
            await asyncio.wait(pending, timeout=5.0)
            for task in pending:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def run_once(self, worker: int = 0) -> bool:
        """Claim and run one job if one is due; True when a job ran (for tests and scripts)."""
        job = await self.queue.claim(self._owner(worker), self.kinds, lease_s=self.lease_s)
        if job is None:
            return False
        self.wake()  # another job may be due too
        await self._run(job, self._owner(worker))
        return True

    def _owner(self, worker: int) -> str:
        return f"{self.name}/{worker}"

    async def _loop(self, worker: int) -> None:
        wakeup = asyncio.Event()
        while not self._stopping:
            try:
                ran = await self.run_once(worker)
            except Exception:
                log.exception("job worker %s failed to claim; retrying", worker)
                ran = False
            if ran or self._stopping:
                continue
            wakeup.clear()
            self._idle.append(wakeup)
            try:
                await wakeup.wait()
            finally:
                if wakeup in self._idle:
                    self._idle.remove(wakeup)

    async def _poll(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.poll_interval_s)
            self.wake()

    async def _run(self, job: Job, owner: str) -> None:
        handler = self._handlers.get(job.kind)
        if handler is None:  # claimed by kind, so only if unregistered meanwhile
            await self.queue.release(job.id, owner)
            return
        ctx = JobContext(job=job, queue=self.queue, owner=owner, lease_s=self.lease_s)
        task = asyncio.create_task(handler(ctx), name=f"rixin-job-{job.id}")
        self._running[job.id] = task
        beat = asyncio.create_task(self._heartbeat(ctx, task))
        try:
            result = await task
        except asyncio.CancelledError:
            await self._after_cancel(ctx, task)
        except PermanentJobError as exc:
            await self.queue.fail(job.id, owner, _describe(exc), retry=False)
        except Exception as exc:
            log.warning("job %s (%s) attempt %d failed", job.id, job.kind, job.attempts)
            await self.queue.fail(job.id, owner, _describe(exc))
        else:
            if not await self.queue.complete(job.id, owner, result=result):
                log.warning("job %s finished after losing its lease; result dropped", job.id)
        finally:
            beat.cancel()
            self._running.pop(job.id, None)

    async def _after_cancel(self, ctx: JobContext, task: asyncio.Task[Any]) -> None:
        current = asyncio.current_task()
        if ctx.lost:
            log.info("job %s stopped: cancelled or its lease was lost", ctx.job.id)
        elif self._stopping or not task.cancelled():
            await self.queue.release(ctx.job.id, ctx.owner)
        if current is not None and current.cancelling():
            raise asyncio.CancelledError

    async def _heartbeat(self, ctx: JobContext, task: asyncio.Task[Any]) -> None:
        """Extend the lease every third of it, and store reported progress meanwhile."""
        interval = max(0.05, self.lease_s / 3)
        tick = min(interval, PROGRESS_INTERVAL_S)
        last = asyncio.get_running_loop().time()
        while not task.done():
            await asyncio.sleep(tick)
            now = asyncio.get_running_loop().time()
            if ctx.pending is None and now - last < interval:
                continue
            progress, ctx.pending = ctx.pending, None
            try:
                ok = await self.queue.heartbeat(
                    ctx.job.id, ctx.owner, lease_s=self.lease_s, progress=progress
                )
            except Exception:
                log.warning("heartbeat of job %s failed; will retry", ctx.job.id)
                ctx.pending = ctx.pending or progress
                continue
            last = now
            if not ok:
                ctx.lost = True
                task.cancel()
                return


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
