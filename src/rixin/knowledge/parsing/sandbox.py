"""Parse an untrusted file in a forked, resource-limited child (RELIABILITY B3–B7).

The server never parses user files in its own process. It keeps one fork server
(``forkserver``): a clean interpreter (``-I``, none of the server's environment) that has the
parsing libraries imported and forks a child per file. The child starts a session of its own,
gets the open file as stdin and applies its limits before it reads a byte; this side enforces the
wall clock by killing the child's process group, and reads at most ``max_output_bytes`` of its
JSON reply. Forking a warm interpreter instead of starting one per file took a file's parse from
~60 ms of CPU (mostly start-up and imports) to a few. The fork server is started on first use and
again whenever it died; it stops when this process closes its socket (or exits).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rixin.errors import RixinError
from rixin.knowledge.parsing.document import ParsedDocument
from rixin.knowledge.parsing.errors import PARSE_ERROR_CODES, ParseError
from rixin.knowledge.parsing.faq import FaqEntry, faq_from_json
from rixin.knowledge.parsing.limits import ParseLimits

log = logging.getLogger("rixin.knowledge.parsing")

_CHILD_ENV = {"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"}  # none of the server's secrets
_START_TIMEOUT_S = 60.0
_REAP_TIMEOUT_S = 5.0
_STDERR_CAP = 64 * 1024
_MAX_MESSAGE = 64 * 1024
DEFAULT_LIMITS = ParseLimits()
T = TypeVar("T")


def forkserver_argv() -> list[str]:
    """The fork server's command line; its control socket's descriptor is appended."""
    return [sys.executable, "-I", "-B", "-m", "rixin.knowledge.parsing.forkserver"]


@dataclass
class _Call:
    """One parse in flight: the child's pid once forked, its exit status once reaped."""

    forked: threading.Event = field(default_factory=threading.Event)
    reaped: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None
    status: int | None = None

    def kill(self) -> None:
        if self.pid is not None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@dataclass(frozen=True)
class _Outcome:
    status: int | None
    out: bytes
    err: bytes
    timed_out: bool = False
    too_large: bool = False


class ForkServer:
    """The client of one fork server process; thread-safe, usable from any event loop."""

    def __init__(self, argv: Callable[[], list[str]] = forkserver_argv) -> None:
        self._argv = argv
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._calls: dict[int, tuple[socket.socket, _Call]] = {}  # id -> (its server, call)
        self._ids = itertools.count(1)

    def parse(
        self, source_fd: int, request: dict[str, Any], limits: ParseLimits, call: _Call
    ) -> _Outcome:
        """Run one parse (blocking: call from a worker thread)."""
        sock = self._ensure()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        call_id = next(self._ids)
        self._calls[call_id] = sock, call
        try:
            message = json.dumps({"id": call_id, "request": request}).encode()
            try:
                socket.send_fds(sock, [message], [source_fd, out_w, err_w])
            finally:
                os.close(out_w)
                os.close(err_w)
            out, err, timed_out, too_large = _read(out_r, err_r, limits, call)
            if not call.reaped.wait(_REAP_TIMEOUT_S):
                call.kill()
                call.reaped.wait(_REAP_TIMEOUT_S)
            return _Outcome(call.status, out, err, timed_out, too_large)
        finally:
            os.close(out_r)
            os.close(err_r)
            self._calls.pop(call_id, None)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()  # the fork server sees EOF, kills its children and exits
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=_REAP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._sock = self._proc = None

    def _ensure(self) -> socket.socket:
        with self._lock:
            if self._sock is not None and self._proc is not None and self._proc.poll() is None:
                return self._sock
            if self._proc is not None:
                log.warning(
                    "parser fork server exited (%s); starting a new one", self._proc.returncode
                )
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with theirs:
                proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                    [*self._argv(), str(theirs.fileno())],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                    env=_CHILD_ENV,
                    cwd="/",
                )
            ours.settimeout(_START_TIMEOUT_S)
            try:
                ready = json.loads(ours.recv(_MAX_MESSAGE) or b"{}")
            except (OSError, ValueError):
                ready = {}
            if ready.get("ready") is not True:
                proc.kill()
                proc.wait()
                ours.close()
                raise RixinError("the file parser could not start")
            ours.settimeout(None)
            self._sock, self._proc = ours, proc
            threading.Thread(
                target=self._replies, args=(ours,), daemon=True, name="rixin-parse-replies"
            ).start()
            return ours

    def _replies(self, sock: socket.socket) -> None:
        """Route the fork server's replies to their calls until it goes away."""
        try:
            while data := sock.recv(_MAX_MESSAGE):
                reply = json.loads(data)
                _, call = self._calls.get(int(reply.get("id") or 0), (None, None))
                if call is None:
                    continue
                if "pid" in reply:
                    call.pid = int(reply["pid"])
                    call.forked.set()
                else:
                    call.status = int(reply["status"])
                    call.forked.set()
                    call.reaped.set()
        except (OSError, ValueError):
            pass
        for server, call in list(self._calls.values()):  # it died: nothing more is reaped
            if server is sock:
                call.forked.set()
                call.reaped.set()


def _read(
    out_r: int, err_r: int, limits: ParseLimits, call: _Call
) -> tuple[bytes, bytes, bool, bool]:
    """The child's stdout and (truncated) stderr until both close, the wall clock runs out or
    stdout exceeds its cap; the child is killed in the last two cases."""
    deadline = time.monotonic() + limits.timeout_s
    out, err = bytearray(), bytearray()
    open_fds = {out_r, err_r}
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            call.forked.wait(_REAP_TIMEOUT_S)
            call.kill()
            return bytes(out), bytes(err), True, False
        ready, _, _ = select.select(list(open_fds), [], [], left)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
            elif fd == out_r:
                out += chunk
                if len(out) > limits.max_output_bytes:
                    call.forked.wait(_REAP_TIMEOUT_S)
                    call.kill()
                    return bytes(out), bytes(err), False, True
            elif len(err) < _STDERR_CAP:
                err += chunk[: _STDERR_CAP - len(err)]
    return bytes(out), bytes(err), False, False


_SERVER = ForkServer()


def parse_file(
    path: Path, *, filename: str, limits: ParseLimits = DEFAULT_LIMITS
) -> ParsedDocument:
    """Parse ``path`` in a sandboxed subprocess; blocks, so call it from a worker thread.

    ``filename`` is the user's name for the file: only its extension is used, as a type hint.
    Raises ``ParseError`` for anything wrong with the file.
    """
    return asyncio.run(parse_file_async(path, filename=filename, limits=limits))


async def parse_file_async(
    path: Path, *, filename: str, limits: ParseLimits = DEFAULT_LIMITS
) -> ParsedDocument:
    """``parse_file`` for the event loop: the parse runs in a subprocess, the loop keeps going."""
    request = {"suffix": extension_hint(filename), "limits": limits.to_json()}
    return await _run(path, request, limits, lambda r: ParsedDocument.from_json(r["document"]))


async def parse_faq_async(
    path: Path, *, filename: str, limits: ParseLimits = DEFAULT_LIMITS
) -> list[FaqEntry]:
    """The entries of a FAQ file (CSV, XLSX or JSON), parsed in the sandboxed subprocess."""
    request = {"suffix": extension_hint(filename), "limits": limits.to_json(), "format": "faq"}
    return await _run(path, request, limits, lambda r: faq_from_json(r["faq"]))


async def _run(
    path: Path, request: dict[str, Any], limits: ParseLimits, decode: Callable[[Any], T]
) -> T:
    call = _Call()
    source = await asyncio.to_thread(open, path, "rb")
    with source:
        try:
            outcome = await asyncio.to_thread(_SERVER.parse, source.fileno(), request, limits, call)
        except BaseException:  # cancelled: the child must not outlive the request
            call.kill()
            raise
    if outcome.timed_out:
        raise ParseError("timeout", f"parsing took longer than {limits.timeout_s:g} s")
    if outcome.too_large:
        raise ParseError("too_large", "parser output exceeds the size limit")
    return _reply(outcome.status, outcome.out, outcome.err, decode)


def extension_hint(filename: str) -> str:
    """The lower-case extension of a user-supplied name, or ``""``; the name is never a path."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    return ext.lower() if ext.isascii() and ext.isalnum() and len(ext) <= 10 else ""


def _reply(returncode: int | None, out: bytes, err: bytes, decode: Callable[[Any], T]) -> T:
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
        raise ParseError("resource_limit", f"parser killed by {name or -returncode} (CPU/memory)")
    if returncode != 0:
        if b"MemoryError" in err:
            raise ParseError("resource_limit", "parser ran out of memory")
        detail = err[-2000:].decode(errors="replace")
        log.error("parser subprocess failed (exit %s): %s", returncode, detail)
        raise RixinError("file parser failed")
    try:
        reply: dict[str, Any] = json.loads(out)
        log.debug("parser peak RSS %s kB", reply.get("peak_rss_kb"))
        if reply["ok"] is True:
            return decode(reply)
        code, message = reply["code"], reply["message"]
        if code not in PARSE_ERROR_CODES or not isinstance(message, str):
            raise ValueError(f"unknown parse error code {code!r}")
    except (ValueError, KeyError, TypeError) as exc:
        log.error("parser subprocess replied badly: %r", exc)
        raise RixinError("file parser failed") from exc
    raise ParseError(code, message)
