"""Parse an untrusted file in a fresh, resource-limited interpreter (RELIABILITY B3–B7).

The server never parses user files in its own process: it starts ``runner`` (a new interpreter,
not a fork), hands it the open file as stdin, enforces the wall clock by killing the child's
process group, and reads at most ``max_output_bytes`` of its JSON reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rixin.errors import RixinError
from rixin.knowledge.parsing.document import ParsedDocument
from rixin.knowledge.parsing.errors import PARSE_ERROR_CODES, ParseError
from rixin.knowledge.parsing.faq import FaqEntry, faq_from_json
from rixin.knowledge.parsing.limits import ParseLimits

log = logging.getLogger("rixin.knowledge.parsing")

_CHILD_ENV = {"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"}  # none of the server's secrets
_REAP_TIMEOUT_S = 5.0
_STDERR_CAP = 64 * 1024
DEFAULT_LIMITS = ParseLimits()
T = TypeVar("T")


class _OutputTooLarge(Exception):
    pass


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
    source = await asyncio.to_thread(open, path, "rb")
    with source:
        proc = await asyncio.create_subprocess_exec(
            *_child_argv(json.dumps(request)),
            stdin=source,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=_CHILD_ENV,
            cwd="/",
        )
    try:
        out, err = await asyncio.wait_for(_collect(proc, limits), timeout=limits.timeout_s)
    except TimeoutError:
        raise ParseError("timeout", f"parsing took longer than {limits.timeout_s:g} s") from None
    except _OutputTooLarge:
        raise ParseError("too_large", "parser output exceeds the size limit") from None
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
        await _reap(proc)
    return _reply(proc.returncode, out, err, decode)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for the (killed) child and drain its pipes.

    ``proc.wait()`` alone can hang: when a reader stopped early (output over the cap) the pipe
    transport stays paused, never sees EOF, and asyncio waits for that before it reports exit.
    Reading the rest resumes it; the child is dead, so what is left is at most a pipe buffer.
    """
    try:
        await asyncio.wait_for(proc.communicate(), timeout=_REAP_TIMEOUT_S)
    except (TimeoutError, OSError, ValueError):
        log.warning("parser subprocess %s did not close its pipes", proc.pid)


def extension_hint(filename: str) -> str:
    """The lower-case extension of a user-supplied name, or ``""``; the name is never a path."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    return ext.lower() if ext.isascii() and ext.isalnum() and len(ext) <= 10 else ""


def _child_argv(request: str) -> list[str]:
    return [sys.executable, "-I", "-B", "-m", "rixin.knowledge.parsing.runner", request]


async def _collect(proc: asyncio.subprocess.Process, limits: ParseLimits) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    out = asyncio.create_task(_read_capped(proc.stdout, limits.max_output_bytes, truncate=False))
    err = asyncio.create_task(_read_capped(proc.stderr, _STDERR_CAP, truncate=True))
    try:
        result = await out, await err
    finally:
        out.cancel()
        err.cancel()
    await proc.wait()
    return result


async def _read_capped(stream: asyncio.StreamReader, cap: int, *, truncate: bool) -> bytes:
    buf = bytearray()
    while chunk := await stream.read(65536):
        if len(buf) + len(chunk) > cap:
            if not truncate:
                raise _OutputTooLarge
            chunk = chunk[: max(0, cap - len(buf))]
        buf += chunk
    return bytes(buf)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
