"""Files in and out of a session dir, treating everything the sandbox wrote as hostile.

Out: only regular files (``lstat``, every component opened ``O_NOFOLLOW`` relative to its parent's
fd, so a symlink or a dir swapped for one mid-walk leads nowhere), new or changed during the run,
at most ``artifact_bytes`` each, **copied** out under a server-generated id (a later run cannot
change or re-point what was returned), with a sanitised display name and a MIME type sniffed
from the bytes. In: one path component, sanitised, written with ``O_NOFOLLOW | O_EXCL`` after
unlinking whatever the sandbox left under that name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rixin.errors import InvalidRequest

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
)
#: Snapshot of a session dir: relative path -> (inode, size, mtime_ns).
Snapshot = dict[str, tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file the code produced, copied out of the sandbox. ``path`` is the host copy."""

    id: str
    name: str
    path: Path
    size: int
    mime: str


def safe_name(name: str, *, max_len: int = 128) -> str:
    """A display/file name of ``[A-Za-z0-9._-]``, no leading dot, never empty."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).lstrip(".")[:max_len]
    return cleaned or "file"


def input_name(name: str) -> str:
    """Validate a caller-supplied file name: exactly one plain path component."""
    if (
        not name
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name in (".", "..")
        or len(name) > 255
    ):
        raise InvalidRequest(f"invalid file name {name!r}", param="files_in")
    return name


def sniff_mime(head: bytes) -> str:
    """MIME type from content only; markup (HTML, SVG) is never reported as renderable."""
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if b"\x00" in head:
        return "application/octet-stream"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            return "application/octet-stream"
        text = head[: exc.start].decode("utf-8")
    with contextlib.suppress(ValueError):
        json.loads(text)
        return "application/json"
    return "text/plain"


def write_inputs(session_dir: Path, files: dict[str, bytes], uid: int | None) -> None:
    dir_fd = os.open(session_dir, _DIR_FLAGS)
    try:
        for raw_name, data in files.items():
            name = input_name(raw_name)
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(name, dir_fd=dir_fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
            except (FileExistsError, IsADirectoryError) as exc:  # a dir of that name
                raise InvalidRequest(f"cannot write {name!r}", param="files_in") from exc
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if uid is not None:
                    os.fchown(fh.fileno(), uid, uid)
    finally:
        os.close(dir_fd)


def _walk(dir_fd: int, prefix: str, depth: int) -> Iterator[tuple[int, str, os.stat_result]]:
    """(parent dir fd, relative path, lstat) of regular files; never follows a link."""
    with os.scandir(dir_fd) as it:
        entries = list(it)
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        try:
            st = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield dir_fd, rel, st
        elif stat.S_ISDIR(st.st_mode) and depth > 0:
            try:
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                yield from _walk(child, f"{rel}/", depth - 1)
            finally:
                os.close(child)


def snapshot(session_dir: Path, *, depth: int = 4) -> Snapshot:
    dir_fd = os.open(session_dir, _DIR_FLAGS)
    try:
        return {
            rel: (st.st_ino, st.st_size, st.st_mtime_ns) for _, rel, st in _walk(dir_fd, "", depth)
        }
    finally:
        os.close(dir_fd)


def _copy_out(parent_fd: int, rel: str, limit: int, dest: Path) -> int | None:
    """Copy one file to dest; None if it is no longer a regular file or is over the limit."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(rel.rsplit("/", 1)[-1], flags, dir_fd=parent_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        data = src.read(limit + 1)
    if len(data) > limit:
        return None
    dest.write_bytes(data)
    return len(data)


def collect(
    session_dir: Path,
    before: Snapshot,
    store: Path,
    *,
    max_bytes: int,
    max_count: int,
    depth: int = 4,
) -> list[Artifact]:
    """Copy the files the run created or changed into ``store``; return them, oldest first."""
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    found: list[Artifact] = []
    dir_fd = os.open(session_dir, _DIR_FLAGS)
    try:
        for parent_fd, rel, st in _walk(dir_fd, "", depth):
            if before.get(rel) == (st.st_ino, st.st_size, st.st_mtime_ns):
                continue
            if len(found) >= max_count:
                break
            artifact_id = "cfile_" + secrets.token_hex(16)
            dest = store / artifact_id
            size = _copy_out(parent_fd, rel, max_bytes, dest)
            if size is None:
                continue
            with dest.open("rb") as fh:
                mime = sniff_mime(fh.read(512))
            found.append(Artifact(artifact_id, safe_name(rel), dest, size, mime))
    finally:
        os.close(dir_fd)
    return found
