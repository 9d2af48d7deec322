"""The durable job queue and worker pool, congruent on SQLite and PostgreSQL; D6 kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rixin.errors import NotFound
from rixin.jobs import JobContext, JobQueue, PermanentJobError, WorkerPool
from rixin.jobs.queue import LOST_WORKER_ERROR
from rixin.store.db import Database

P = "proj_a"


async def test_enqueue_is_idempotent_per_project_kind_and_key(queue: JobQueue) -> None:
    first = await queue.enqueue(P, "ingest", {"file": "f1"}, idempotency_key="k1")
    again = await queue.enqueue(P, "ingest", {"file": "other"}, idempotency_key="k1")
    other_kind = await queue.enqueue(P, "run", {}, idempotency_key="k1")
    other_project = await queue.enqueue("proj_b", "ingest", {}, idempotency_key="k1")
    no_key = [await queue.enqueue(P, "ingest", {}) for _ in range(2)]
    assert again.id == first.id and again.payload == {"file": "f1"}
    assert len({first.id, other_kind.id, other_project.id, *(j.id for j in no_key)}) == 5
    assert (await queue.find(P, "ingest", "k1")) == first
    assert await queue.counts() == {"queued": 5}


async def test_claim_complete_exactly_once(queue: JobQueue) -> None:
    job = await queue.enqueue(P, "ingest", {"n": 1})
    claimed = await queue.claim("w1")
    assert claimed is not None and claimed.id == job.id
    assert claimed.state == "running" and claimed.attempts == 1 and claimed.lease_owner == "w1"
    assert await queue.claim("w2") is None
    assert await queue.complete(job.id, "w2") is False  # not the owner
    assert await queue.complete(job.id, "w1", result={"chunks": 3}) is True
    assert await queue.complete(job.id, "w1") is False  # already done
    done = await queue.get(P, job.id)
    assert done.state == "succeeded" and done.result == {"chunks": 3} and done.finished_at


async def test_claim_filters_by_kind_and_honours_delay(queue: JobQueue) -> None:
    await queue.enqueue(P, "later", {}, delay_s=60)
    run = await queue.enqueue(P, "run", {})
    assert await queue.claim("w", kinds={"ingest"}) is None
    assert await queue.claim("w", kinds={"later"}) is None
    claimed = await queue.claim("w", kinds={"run", "later"})
    assert claimed is not None and claimed.id == run.id


async def test_expired_lease_is_reclaimed_and_old_owner_is_fenced(queue: JobQueue) -> None:
    job = await queue.enqueue(P, "ingest", {})
    assert await queue.claim("dead", lease_s=0.2) is not None
    assert await queue.claim("w2") is None  # lease still valid
    await asyncio.sleep(0.3)
    retaken = await queue.claim("w2")
    assert retaken is not None and retaken.id == job.id
    assert retaken.attempts == 2 and retaken.last_error == LOST_WORKER_ERROR
    assert await queue.heartbeat(job.id, "dead") is False
    assert await queue.complete(job.id, "dead") is False
    assert await queue.heartbeat(job.id, "w2", progress={"done": 1}) is True
    assert await queue.complete(job.id, "w2") is True
    assert (await queue.get(P, job.id)).progress == {"done": 1}


async def test_lease_lost_on_last_attempt_fails_the_job(queue: JobQueue) -> None:
    job = await queue.enqueue(P, "ingest", {}, max_attempts=1)
    assert await queue.claim("dead", lease_s=0.1) is not None
    await asyncio.sleep(0.2)
    assert await queue.claim("w2") is None
    failed = await queue.get(P, job.id)
    assert failed.state == "failed" and failed.last_error == LOST_WORKER_ERROR


async def test_failures_retry_with_backoff_then_fail(db: Database) -> None:
    queue = JobQueue(db, backoff_base_s=0.2, backoff_max_s=1.0)
    assert queue.backoff(1) == 0.2 and queue.backoff(3) == 0.8 and queue.backoff(9) == 1.0
    job = await queue.enqueue(P, "ingest", {}, max_attempts=2)
    assert await queue.claim("w") is not None
    retried = await queue.fail(job.id, "w", "boom 1")
    assert retried is not None and retried.state == "queued" and retried.last_error == "boom 1"
    assert await queue.claim("w") is None  # backing off
    await asyncio.sleep(0.25)
    assert await queue.claim("w") is not None
    final = await queue.fail(job.id, "w", "boom 2")
    assert final is not None and final.state == "failed" and final.attempts == 2
    assert final.last_error == "boom 2"
    assert await queue.fail(job.id, "w", "late") is None


async def test_permanent_failure_and_cancel(queue: JobQueue) -> None:
    bad = await queue.enqueue(P, "ingest", {}, max_attempts=5)
    assert await queue.claim("w") is not None
    failed = await queue.fail(bad.id, "w", "unparseable", retry=False)
    assert failed is not None and failed.state == "failed"
    queued = await queue.enqueue(P, "ingest", {})
    assert (await queue.cancel(P, queued.id)).state == "cancelled"
    assert await queue.claim("w") is None
    running = await queue.enqueue(P, "ingest", {})
    assert await queue.claim("w") is not None
    assert (await queue.cancel(P, running.id)).state == "cancelled"
    assert await queue.heartbeat(running.id, "w") is False
    assert await queue.complete(running.id, "w") is False
    with pytest.raises(NotFound):
        await queue.cancel("proj_b", running.id)  # another project's job does not exist
    with pytest.raises(NotFound):
        await queue.get(P, "job_" + "x" * 200)


async def test_concurrent_claimers_never_share_a_job(queue: JobQueue) -> None:
    ids = {(await queue.enqueue(P, "ingest", {"i": i})).id for i in range(24)}
    seen: list[str] = []

    async def claimer(name: str) -> None:
        while (job := await queue.claim(name)) is not None:
            seen.append(job.id)
            assert await queue.complete(job.id, name)

    await asyncio.gather(*(claimer(f"w{i}") for i in range(6)))
    assert sorted(seen) == sorted(ids)
    assert await queue.counts() == {"succeeded": 24}


async def test_enqueue_inside_a_callers_transaction(db: Database, queue: JobQueue) -> None:
    woken: list[int] = []
    queue.add_listener(lambda: woken.append(1))
    with pytest.raises(RuntimeError):
        async with db.session() as session:
            await queue.enqueue(P, "ingest", {}, session=session)
            raise RuntimeError("rolled back")
    assert await queue.counts() == {} and woken == []
    async with db.session() as session:
        job = await queue.enqueue(P, "ingest", {}, session=session)
    assert woken == [1]
    assert (await queue.get(P, job.id)).state == "queued"


async def test_worker_pool_runs_retries_and_fails(queue: JobQueue) -> None:
    calls: Counter[str] = Counter()

    async def ok(ctx: JobContext) -> dict[str, Any]:
        calls[ctx.job.id] += 1
        await ctx.progress({"step": 1})
        return {"echo": ctx.job.payload["n"]}

    async def flaky(ctx: JobContext) -> None:
        calls[ctx.job.id] += 1
        if ctx.job.attempts < 2:
            raise ValueError("transient")

    async def hopeless(ctx: JobContext) -> None:
        calls[ctx.job.id] += 1
        raise PermanentJobError("cannot parse")

    pool = WorkerPool(queue, concurrency=3, poll_interval_s=5.0)  # wake-ups, not polling
    pool.register("ok", ok)
    pool.register("flaky", flaky)
    pool.register("hopeless", hopeless)
    with pytest.raises(ValueError):
        pool.register("ok", ok)
    await pool.start()
    try:
        jobs = [await queue.enqueue(P, "ok", {"n": i}) for i in range(5)]
        jobs.append(await queue.enqueue(P, "flaky", {}))
        jobs.append(await queue.enqueue(P, "hopeless", {}))
        deadline = time.monotonic() + 10
        while (await queue.counts()).keys() - {"succeeded", "failed"}:
            assert time.monotonic() < deadline, await queue.counts()
            await asyncio.sleep(0.02)
    finally:
        await pool.stop()
    states: dict[str, list[Any]] = {job.kind: [] for job in jobs}
    for job in jobs:
        states[job.kind].append(await queue.get(P, job.id))
    for done in states["ok"]:
        assert done.state == "succeeded" and done.result == {"echo": done.payload["n"]}
    assert [j.state for j in states["flaky"]] == ["succeeded"] and calls[jobs[5].id] == 2
    assert states["hopeless"][0].state == "failed"
    assert states["hopeless"][0].last_error == "PermanentJobError: cannot parse"
    assert calls[jobs[6].id] == 1


async def test_worker_pool_cancels_a_handler_whose_job_was_cancelled(queue: JobQueue) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def slow(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    pool = WorkerPool(queue, concurrency=1, poll_interval_s=0.05, lease_s=0.3)
    pool.register("slow", slow)
    await pool.start()
    try:
        job = await queue.enqueue(P, "slow", {})
        await asyncio.wait_for(started.wait(), 5)
        await queue.cancel(P, job.id)
        await asyncio.wait_for(stopped.wait(), 5)  # noticed at the next heartbeat
    finally:
        await pool.stop()
    assert (await queue.get(P, job.id)).state == "cancelled"


async def test_reported_progress_is_stored_by_the_heartbeat(queue: JobQueue) -> None:
    """Progress is kept in memory and stored within ``PROGRESS_INTERVAL_S``, the last report
    winning; a job that ends first stores none (a short job costs no progress writes)."""
    reported, release = asyncio.Event(), asyncio.Event()

    async def stages(ctx: JobContext) -> None:
        for stage in ("parsing", "embedding", "writing"):
            await ctx.progress({"stage": stage})
        reported.set()
        await release.wait()

    async def quick(ctx: JobContext) -> None:
        await ctx.progress({"stage": "parsing"})

    pool = WorkerPool(queue, concurrency=2, poll_interval_s=0.05, lease_s=60.0)
    pool.register("stages", stages)
    pool.register("quick", quick)
    await pool.start()
    try:
        job = await queue.enqueue(P, "stages", {})
        fast = await queue.enqueue(P, "quick", {})
        await asyncio.wait_for(reported.wait(), 5)
        deadline = time.monotonic() + 5
        while (await queue.get(P, job.id)).progress != {"stage": "writing"}:
            assert time.monotonic() < deadline, (await queue.get(P, job.id)).progress
            await asyncio.sleep(0.05)
        release.set()
        while (await queue.get(P, job.id)).state != "succeeded":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await pool.stop()
    done = await queue.get(P, fast.id)
    assert done.state == "succeeded" and not done.progress


async def test_graceful_stop_releases_unfinished_jobs(queue: JobQueue) -> None:
    started = asyncio.Event()

    async def slow(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(30)

    pool = WorkerPool(queue, concurrency=1, poll_interval_s=0.05)
    pool.register("slow", slow)
    await pool.start()
    job = await queue.enqueue(P, "slow", {})
    await asyncio.wait_for(started.wait(), 5)
    await pool.stop(timeout_s=0.1)
    released = await queue.get(P, job.id)
    assert released.state == "queued" and released.attempts == 0


# -- D6: SIGKILL the worker process with queued jobs, restart ---------------------------------

WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from rixin.jobs import JobQueue, WorkerPool
    from rixin.store.db import Database

    url, log_path, until_idle = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

    async def handler(ctx):
        await asyncio.sleep(0.02)
        with open(log_path, "a") as log:  # the side effect, before completion is recorded
            log.write(ctx.job.id + "\\n")
            log.flush()
            os.fsync(log.fileno())
        await asyncio.sleep(0.02)
        return {"done": True}

    async def main():
        db = Database(url)
        await db.connect()
        queue = JobQueue(db, lease_s=1.0, backoff_base_s=0.0)
        pool = WorkerPool(queue, concurrency=4, poll_interval_s=0.05)
        pool.register("d6", handler)
        await pool.start()
        while True:
            await asyncio.sleep(0.1)
            counts = await queue.counts()
            if until_idle and not counts.get("queued") and not counts.get("running"):
                break
        await pool.stop()
        await db.aclose()

    asyncio.run(main())
    """
)


def _start_worker(url: str, log_path: Path, until_idle: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, url, str(log_path), "1" if until_idle else "0"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_d6_kill_9_worker_with_queued_jobs_loses_nothing(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    queue = JobQueue(db)
    ids = {(await queue.enqueue(P, "d6", {"i": i}, max_attempts=5)).id for i in range(50)}
    log_path = tmp_path / "effects.log"
    worker = _start_worker(db_url, log_path, until_idle=False)
    try:
        deadline = time.monotonic() + 30
        while len(_lines(log_path)) < 12:
            assert worker.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.01)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    before = await queue.counts()
    assert before.get("succeeded", 0) < 50
    restarted = _start_worker(db_url, log_path, until_idle=True)
    assert restarted.wait(60) == 0
    jobs = [await queue.get(P, job_id) for job_id in ids]
    assert all(job.state == "succeeded" for job in jobs), Counter(j.state for j in jobs)
    effects = Counter(_lines(log_path))
    assert set(effects) == ids  # every job ran
    # At-least-once execution: only jobs in flight at the kill (≤ concurrency) ran twice.
    assert sum(n - 1 for n in effects.values()) <= 4
