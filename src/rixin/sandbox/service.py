"""``SandboxService``: the code interpreter's API for the agent run engine.

In-process, not a network service: there is no sandbox daemon, no port and no control socket,
so there is nothing for tenant code (which has no network at all) or anyone else to reach, and no
secret to leak or default (RELIABILITY S8's Dify #36637 / RAGFlow CVE-2024-12433 class does not
arise). Callers reach it only through rixin's own authenticated API; ``project_id`` is checked
on every call so one project cannot drive another's session (unknown or foreign ids are
``NotFound`` alike).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from rixin.errors import InvalidRequest, NotFound, Overloaded, RixinError
from rixin.sandbox import artifacts
from rixin.sandbox.artifacts import Artifact
from rixin.sandbox.policy import HostLayout, SandboxPolicy
from rixin.sandbox.pool import WarmPool
from rixin.sandbox.process import SETUP_FAILED, RawResult
from rixin.sandbox.session import Session, remove_tree

_REASONS = {
    "wall_timeout": "wall-clock limit of {timeout:g} s exceeded",
    "cpu_limit": "CPU time limit of {cpu} s exceeded",
    "output_limit": "output limit of {output} bytes exceeded",
    "disk_quota": "session disk quota ({disk} bytes, {entries} entries) exceeded",
    "file_size_limit": "file size limit of {fsize} bytes exceeded",
    "seccomp": "a forbidden system call was made",
    "killed": "killed (resource limit)",
}


class SandboxUnavailable(RixinError):
    """bubblewrap or libseccomp is missing, or the sandbox failed its own confinement check."""

    status_code = 503
    code = "sandbox_unavailable"


@dataclass(frozen=True, slots=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    killed_reason: str | None
    files_out: list[Artifact] = field(default_factory=list)
    duration_s: float = 0.0
    warm: bool = False  # the interpreter was already confined and waiting when the call came


def _text(data: bytes, total: int, cap: int) -> str:
    text = data.decode("utf-8", errors="replace")
    if total > cap:
        text += f"\n[output truncated: {total} bytes written, first {cap} kept]"
    return text


def uid_processes(uid: int) -> list[int]:
    """Pids whose real uid is ``uid`` (the root-mode leftover check)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
    return pids


def _kill_uid(uid: int) -> None:
    for pid in uid_processes(uid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


class _UidLeases:
    """Root mode: per-session host uids, leased host-wide with ``flock`` so that two services
    (or a test and a server) on one machine never share a uid, nor kill each other's processes.
    """

    def __init__(self, policy: SandboxPolicy) -> None:
        self._range = range(policy.uid_base, policy.uid_base + policy.uid_count)
        self._locks = Path(policy.uid_lock_dir)
        self._held: dict[int, int] = {}

    def acquire(self) -> int:
        self._locks.mkdir(mode=0o700, parents=True, exist_ok=True)
        for uid in self._range:
            if uid in self._held:
                continue
            fd = os.open(
                self._locks / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._held[uid] = fd
            _kill_uid(uid)  # a straggler of a crashed service must not share the new session
            return uid
        raise Overloaded("too many code interpreter sessions on this host", retry_after=30)

    def release(self, uid: int) -> None:
        _kill_uid(uid)
        fd = self._held.pop(uid, None)
        if fd is not None:
            os.close(fd)


class SandboxService:
    """Sessions of confined Python; see ``rixin.sandbox`` for the confinement itself."""

    def __init__(
        self,
        root_dir: Path,
        policy: SandboxPolicy | None = None,
        *,
        layout: HostLayout | None = None,
    ) -> None:
        self.root = Path(root_dir)
        self.policy = policy or SandboxPolicy()
        self._layout = layout or HostLayout.detect()
        self._sessions: dict[str, Session] = {}
        self._uids = _UidLeases(self.policy) if self.policy.root_mode else None
        self._runs = asyncio.Semaphore(self.policy.max_concurrent_runs)
        self._pool = WarmPool(self.policy.pool_size, self._new_session, self._close)
        self._reaper: asyncio.Task[None] | None = None
        self._started = False

    @property
    def layout(self) -> HostLayout:
        if self._layout is None:
            raise SandboxUnavailable("code interpreter unavailable: bubblewrap (bwrap) not found")
        return self._layout

    async def start(self) -> None:
        """Clear what a previous process left, start the reaper and fill the warm pool."""
        if self._started:
            return
        self._started = True
        _ = self.layout
        for sub in ("sessions", "artifacts"):
            await asyncio.to_thread(remove_tree, self.root / sub)
            (self.root / sub).mkdir(mode=0o700, parents=True)
        os.chmod(self.root, 0o700)  # noqa: PTH101
        self._reaper = asyncio.ensure_future(self._reap_forever())
        self._pool.refill()

    async def _new_session(self) -> Session:
        uid = self._uids.acquire() if self._uids is not None else None
        session_id = "cisess_" + secrets.token_hex(16)
        try:
            return await asyncio.to_thread(
                Session.create, session_id, self.root, self.layout, self.policy, uid
            )
        except BaseException:
            if self._uids is not None and uid is not None:
                self._uids.release(uid)
            raise

    async def create_session(self, project_id: str) -> Session:
        await self.start()
        if len(self._sessions) >= self.policy.max_sessions:
            raise Overloaded("too many code interpreter sessions", retry_after=30)
        session = self._pool.take() or await self._new_session()
        session.project_id = project_id
        session.last_used = time.monotonic()
        self._sessions[session.id] = session
        return session

    def _get(self, session_id: str, project_id: str | None) -> Session:
        session = self._sessions.get(session_id)
        if (
            session is None
            or session.closed
            or (project_id is not None and session.project_id != project_id)
        ):
            raise NotFound(f"No code interpreter session '{session_id}'", param="session_id")
        return session

    async def run(
        self,
        session_id: str,
        code: str,
        *,
        files_in: dict[str, bytes] | None = None,
        timeout_s: float | None = None,
        project_id: str | None = None,
    ) -> ExecResult:
        """Run ``code`` in a fresh confined interpreter sharing the session's ``/work``."""
        session = self._get(session_id, project_id)
        source = code.encode("utf-8", errors="surrogatepass")
        if len(source) > self.policy.code_bytes:
            raise InvalidRequest("code too large", param="code")
        timeout = min(timeout_s or self.policy.default_timeout_s, self.policy.wall_timeout_s)
        async with session.lock, self._runs:
            if session.closed:
                raise NotFound(f"No code interpreter session '{session_id}'", param="session_id")
            session.last_used = time.monotonic()
            try:
                return await self._run_locked(session, source, files_in or {}, timeout)
            finally:
                session.last_used = time.monotonic()
                session.prespawn()

    async def _run_locked(
        self, session: Session, source: bytes, files_in: dict[str, bytes], limit_s: float
    ) -> ExecResult:
        if sum(len(v) for v in files_in.values()) > self.policy.disk_bytes:
            raise InvalidRequest("files_in exceed the session disk quota", param="files_in")
        await asyncio.to_thread(artifacts.write_inputs, session.dir, files_in, session.host_uid)
        before = await asyncio.to_thread(artifacts.snapshot, session.dir)
        proc, warm = await session.take_process()
        raw = await proc.execute(source, timeout_s=limit_s, policy=self.policy)
        if raw.exit_code == SETUP_FAILED and b"sandbox: confinement" in raw.stderr:
            raise SandboxUnavailable(raw.stderr.decode("utf-8", errors="replace").strip())
        files = await asyncio.to_thread(
            artifacts.collect,
            session.dir,
            before,
            session.store,
            max_bytes=self.policy.artifact_bytes,
            max_count=self.policy.max_artifacts,
        )
        return self._result(raw, files, limit_s, warm)

    def _result(
        self, raw: RawResult, files: list[Artifact], timeout: float, warm: bool
    ) -> ExecResult:
        cap = self.policy.output_bytes
        stderr = _text(raw.stderr, raw.stderr_total, cap)
        if raw.killed_reason is not None:
            p = self.policy
            why = _REASONS.get(raw.killed_reason, raw.killed_reason).format(
                timeout=timeout,
                cpu=p.cpu_seconds,
                output=cap,
                disk=p.disk_bytes,
                entries=p.max_dir_entries,
                fsize=p.max_file_bytes,
            )
            stderr += f"\n[sandbox: execution stopped: {why}]"
        return ExecResult(
            stdout=_text(raw.stdout, raw.stdout_total, cap),
            stderr=stderr,
            exit_code=raw.exit_code,
            timed_out=raw.timed_out,
            killed_reason=raw.killed_reason,
            files_out=files,
            duration_s=raw.duration_s,
            warm=warm,
        )

    async def close_session(self, session_id: str, *, project_id: str | None = None) -> None:
        """End a session: kill its processes, delete its dir and its artifacts."""
        session = self._get(session_id, project_id)
        del self._sessions[session.id]
        await self._close(session)

    async def _close(self, session: Session) -> None:
        session.closed = True
        async with session.lock:
            await session.close()
        if self._uids is not None and session.host_uid is not None:
            self._uids.release(session.host_uid)

    async def reap(self) -> int:
        """Close sessions idle longer than the policy's TTL; return how many were closed."""
        deadline = time.monotonic() - self.policy.idle_ttl_s
        expired = [
            s for s in self._sessions.values() if s.last_used < deadline and not s.lock.locked()
        ]
        for session in expired:
            self._sessions.pop(session.id, None)
            await self._close(session)
        return len(expired)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.policy.reap_interval_s)
            with contextlib.suppress(Exception):
                await self.reap()

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self._pool.aclose()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await self._close(session)
