"""The one worker for the background runs of every API surface.

A background run (a ``background`` response, an Assistants run created without ``stream``) is a
job on the durable queue. Each surface is a ``RunFlavour``: it names its job kind, runs one such
job, and may add to the sweep. One ``WorkerPool`` claims the jobs of all flavours and one sweeper
settles runs whose executor vanished (``RunEngine.sweep``, D2) before each flavour's own sweep,
so an idle process polls the queue once per interval, not once per surface and worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from rixin.agents.engine import RunEngine
from rixin.errors import NotFound
from rixin.jobs import JobContext, JobQueue, WorkerPool
from rixin.store.records_agents import AgentRunRecord

log = logging.getLogger("rixin.agents")

POLL_INTERVAL_S = 0.5


class RunFlavour(Protocol):
    """An API surface whose background runs the shared worker executes."""

    job_kind: str

    async def run_job(self, ctx: JobContext) -> dict[str, Any] | None:
        """Execute the run of a claimed job (detached: a shutdown leaves it to the next)."""
        ...

    async def after_sweep(self) -> None:
        """The surface's own clean-up, after stale runs were settled."""
        ...


class RunWorker:
    """The worker pool and sweeper shared by every flavour on one engine and queue.

    Each flavour's service calls ``start`` and ``stop``; the pool runs from the first ``start``
    to the last ``stop``.
    """

    def __init__(self, engine: RunEngine, jobs: JobQueue) -> None:
        settings = engine.settings
        self.engine = engine
        self.jobs = jobs
        self.pool = WorkerPool(
            jobs,
            concurrency=settings.workers,
            lease_s=settings.run_lease_s,
            poll_interval_s=POLL_INTERVAL_S,
        )
        self._flavours: list[RunFlavour] = []
        self._users = 0
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, flavour: RunFlavour) -> None:
        self.pool.register(flavour.job_kind, flavour.run_job)
        self._flavours.append(flavour)

    async def start(self) -> None:
        self._users += 1
        if self._users > 1:
            return
        await self.sweep()
        await self.pool.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="rixin-runs-sweeper")

    async def stop(self, timeout_s: float = 2.0) -> None:
        self._users = max(0, self._users - 1)
        if self._users:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(BaseException):
                await self._sweeper
            self._sweeper = None
        await self.pool.stop(timeout_s=timeout_s)

    async def sweep(self) -> int:
        """Settle runs whose executor vanished, then let each flavour clean up."""
        settled = await self.engine.sweep(self._job_alive)
        for flavour in self._flavours:
            await flavour.after_sweep()
        return settled

    async def _sweep_loop(self) -> None:
        interval = max(0.5, self.engine.settings.run_lease_s / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("run sweep failed")

    async def _job_alive(self, run: AgentRunRecord) -> bool:
        if run.job_id is None:
            return False
        try:
            job = await self.jobs.get(run.project_id, run.job_id)
        except NotFound:
            return False
        return job.state in ("queued", "running")


def run_worker(engine: RunEngine, jobs: JobQueue) -> RunWorker:
    """The engine's one background worker (made by the first surface that asks for it)."""
    if engine.worker is None:
        engine.worker = RunWorker(engine, jobs)
    return engine.worker
