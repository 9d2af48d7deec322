"""One sandboxed interpreter: spawn it (confined, waiting for code), feed it, bound it, kill it.

The parent enforces what rlimits cannot: the wall clock, the size of stdout/stderr, and the
session dir's total bytes and entries (RLIMIT_FSIZE caps one file only). Killing the outer
bwrap (its own process group, SIGKILL) tears the sandbox down: its pid-1 reaper has
``--die-with-parent``, and when a pid namespace's init dies the kernel kills every process in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from rixin.sandbox.bwrap import build_argv
from rixin.sandbox.policy import HostLayout, SandboxPolicy
from rixin.sandbox.seccomp import compiled_filter

SETUP_FAILED = 125
_CHUNK = 64 * 1024


@dataclass(slots=True)
class RawResult:
    stdout: bytes
    stderr: bytes
    stdout_total: int
    stderr_total: int
    exit_code: int | None
    timed_out: bool
    killed_reason: str | None
    duration_s: float


def dir_usage(root: Path, max_entries: int) -> tuple[int, int]:
    """(bytes, entries) under root without following symlinks; stops counting past max."""
    total = entries = 0
    stack = [root]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        with contextlib.suppress(OSError):
                            total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total, entries


class SandboxProcess:
    """A runner already confined and blocked on stdin; ``execute`` may be called once."""

    def __init__(
        self, proc: asyncio.subprocess.Process, session_dir: Path, init: tuple[int, str] | None
    ) -> None:
        self._proc = proc
        self._dir = session_dir
        self._init = init  # (host pid, pid-namespace link) of the sandbox's pid 1
        self._reason: str | None = None
        self.spawned_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.returncode is None

    @classmethod
    async def spawn(
        cls,
        layout: HostLayout,
        policy: SandboxPolicy,
        session_dir: Path,
        *,
        tag: str,
        host_uid: int | None,
    ) -> SandboxProcess:
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, compiled_filter())  # ~1 KiB: fits the pipe buffer
        finally:
            os.close(write_fd)
        info_read, info_write = os.pipe()
        try:
            argv = build_argv(
                layout,
                policy,
                session_dir=session_dir,
                seccomp_fd=read_fd,
                tag=tag,
                host_uid=host_uid,
                info_fd=info_write,
            )
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(read_fd, info_write),
                start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                cwd="/",
            )
        finally:
            os.close(read_fd)
            os.close(info_write)
        try:
            info = await asyncio.to_thread(_read_info, info_read)
        finally:
            os.close(info_read)
        return cls(proc, session_dir, info)

    def kill(self, reason: str | None = None) -> None:
        if self._reason is None:
            self._reason = reason
        # pid 1 first: when a pid namespace's init dies the kernel kills all its members. Its
        # --die-with-parent is not relied on alone (it can be lost when bwrap changes creds).
        if self._init is not None:
            pid, ns = self._init
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/pid") == ns:
                    os.kill(pid, signal.SIGKILL)
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        self.kill()
        await self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.read()

    async def _pump(self, stream: asyncio.StreamReader | None, cap: int) -> tuple[bytes, int]:
        kept = bytearray()
        total = 0
        if stream is None:
            return b"", 0
        while chunk := await stream.read(_CHUNK):
            total += len(chunk)
            if len(kept) < cap:
                kept += chunk[: cap - len(kept)]
            if total > cap:
                self.kill("output_limit")
        return bytes(kept), total

    async def _watch_disk(self, policy: SandboxPolicy) -> None:
        while True:
            await asyncio.sleep(policy.watchdog_interval_s)
            used, entries = await asyncio.to_thread(dir_usage, self._dir, policy.max_dir_entries)
            if used > policy.disk_bytes or entries > policy.max_dir_entries:
                self.kill("disk_quota")
                return

    async def execute(self, code: bytes, *, timeout_s: float, policy: SandboxPolicy) -> RawResult:
        started = time.monotonic()
        out = asyncio.ensure_future(self._pump(self._proc.stdout, policy.output_bytes))
        err = asyncio.ensure_future(self._pump(self._proc.stderr, policy.output_bytes))
        watchdog = asyncio.ensure_future(self._watch_disk(policy))
        timed_out = False
        try:
            await self._feed(code)
            try:
                await asyncio.wait_for(self._proc.wait(), timeout_s)
            except TimeoutError:
                timed_out = True
                self.kill("wall_timeout")
                await self._proc.wait()
            self.kill()  # the code's own background processes end with it
            pumps = asyncio.gather(out, err)
            (stdout, stdout_total), (stderr, stderr_total) = await asyncio.wait_for(pumps, 5)
        finally:
            watchdog.cancel()
            self.kill()
            out.cancel()
            err.cancel()
        code_ = self._proc.returncode
        return RawResult(
            stdout=stdout,
            stderr=stderr,
            stdout_total=stdout_total,
            stderr_total=stderr_total,
            exit_code=code_,
            timed_out=timed_out,
            killed_reason=self._reason or _signal_reason(code_),
            duration_s=time.monotonic() - started,
        )

    async def _feed(self, code: bytes) -> None:
        stdin = self._proc.stdin
        if stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(code)
            await stdin.drain()
        stdin.close()


def _read_info(fd: int) -> tuple[int, str] | None:
    """bwrap's ``--info-fd`` JSON: the host pid of the sandbox's pid 1, and its pid namespace."""
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    try:
        pid = int(json.loads(data)["child-pid"])
        return pid, os.readlink(f"/proc/{pid}/ns/pid")
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _signal_reason(code: int | None) -> str | None:
    """bwrap reports a child killed by a signal as 128 + signo."""
    if code is None:
        return None
    signo = -code if code < 0 else code - 128 if code > 128 else 0
    if signo == signal.SIGXCPU:
        return "cpu_limit"
    if signo == signal.SIGKILL:
        return "killed"
    if signo == signal.SIGSYS:
        return "seccomp"
    if signo == signal.SIGXFSZ:
        return "file_size_limit"
    return None
