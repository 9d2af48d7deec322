"""A code-interpreter session: a private work dir, its uid, and a warm interpreter.

State between calls lives in files: every ``run`` is a fresh confined process sharing the
session dir at ``/work``. To keep that cheap, the next process is spawned (confined, blocked on
stdin) as soon as the previous one ends, so a call rarely pays bubblewrap's and Python's
start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rixin.sandbox.policy import HostLayout, SandboxPolicy
from rixin.sandbox.process import SandboxProcess


@dataclass(eq=False)
class Session:
    """One sandbox session; owned by ``SandboxService``, which serialises runs per session."""

    id: str
    dir: Path  # mounted at /work
    store: Path  # artifacts copied out of the sandbox
    host_uid: int | None
    layout: HostLayout
    policy: SandboxPolicy
    project_id: str | None = None
    created_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False
    _ready: SandboxProcess | None = None
    _spawning: asyncio.Task[SandboxProcess] | None = None

    @classmethod
    def create(
        cls, session_id: str, root: Path, layout: HostLayout, policy: SandboxPolicy, uid: int | None
    ) -> Session:
        work = root / "sessions" / session_id
        work.mkdir(mode=0o700)
        if uid is not None:
            os.chown(work, uid, uid)
        store = root / "artifacts" / session_id
        return cls(session_id, work, store, uid, layout, policy)

    def prespawn(self) -> None:
        """Start the next interpreter in the background (no-op if one is ready or coming)."""
        if self.closed or self._spawning is not None or self._ready is not None:
            return
        self._spawning = asyncio.ensure_future(self._spawn())

    async def _spawn(self) -> SandboxProcess:
        return await SandboxProcess.spawn(
            self.layout, self.policy, self.dir, tag=self.id, host_uid=self.host_uid
        )

    async def take_process(self) -> tuple[SandboxProcess, bool]:
        """A confined interpreter for the next run, and whether it was already warm."""
        warm = self._ready is not None
        if self._spawning is not None:
            task, self._spawning = self._spawning, None
            warm = task.done()
            with contextlib.suppress(Exception):
                self._ready = await task
        proc, self._ready = self._ready, None
        if proc is not None and proc.alive:
            return proc, warm
        if proc is not None:
            await proc.close()
        return await self._spawn(), False

    async def close(self) -> None:
        """Kill every process of the session and delete its files (work dir and artifacts)."""
        self.closed = True
        if self._spawning is not None:  # not cancelled: a half-made process could leak
            with contextlib.suppress(Exception):
                self._ready = self._ready or await self._spawning
            self._spawning = None
        if self._ready is not None:
            await self._ready.close()
            self._ready = None
        await asyncio.to_thread(remove_tree, self.dir)
        await asyncio.to_thread(remove_tree, self.store)


def remove_tree(path: Path) -> None:
    """Delete a tree the sandbox wrote, including dirs it made unreadable (``chmod 000``)."""

    def retry(func: Callable[[str], object], failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)  # noqa: PTH101
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)  # noqa: PTH101
                shutil.rmtree(failed, ignore_errors=True)
            else:
                func(failed)

    shutil.rmtree(path, onerror=retry)
    shutil.rmtree(path, ignore_errors=True)
