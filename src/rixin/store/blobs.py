"""Content-addressed blob store: ``<data_dir>/files/ab/cd/<sha256>``.

Bytes are streamed into a temporary file under ``files/.tmp/`` (same filesystem, so the final
``rename`` is atomic), hashed and counted on the way, with the size limit enforced per chunk:
an oversized body is abandoned at the first chunk past the limit, never fully stored. The file
is fsynced before it is renamed to its hash and the directory fsynced after, so a blob that a
committed row names survives a crash (D1). Paths come only from a validated sha256 hex digest;
no user-supplied name ever reaches the filesystem (B7).

Lifecycle, with the ``blobs`` table as reference count::

    staged = await store.stage(chunks, max_bytes=...)     # temp file, fsynced, hashed
    async with db.session() as s:
        blob = await store.attach(s, staged)              # refcount+1, file put in place
        s.add(FileRecord(..., sha256=blob.sha256))
    ...
    async with db.session() as s:
        await store.detach(s, sha256)                     # refcount-1
    await store.collect([sha256])                         # unreferenced files removed

``attach`` and ``collect`` create or remove a blob's file only while they hold its row lock, so a
delete never removes bytes that a concurrent upload of the same content just referenced. Equal
contents are stored once (dedupe), whichever project sent them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.errors import NotFound, RequestTooLarge
from rixin.store.db import Database
from rixin.store.records import now_s
from rixin.store.records_files import BlobRecord

log = logging.getLogger("rixin.store.blobs")

CHUNK_BYTES = 256 * 1024
TMP_DIR = ".tmp"
STALE_TMP_S = 3600.0
"""Temporary files older than this are leftovers of a crash; ``sweep_tmp`` removes them."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Blob:
    """Stored content: its sha256 (hex) and size."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class StagedBlob:
    """Bytes written and fsynced to a temporary file, not yet referenced by any row."""

    sha256: str
    bytes: int
    temp_path: Path

    def discard(self) -> None:
        """Remove the temporary file (when the row that would reference it is not created)."""
        self.temp_path.unlink(missing_ok=True)


class BlobWriter:
    """Incremental writer: ``await write(chunk)`` … ``await finish()``; ``abort()`` on failure.

    Usable as an async context manager that aborts unless ``finish()`` was reached.
    """

    def __init__(self, tmp_dir: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._path = tmp_dir / f"{secrets.token_hex(16)}.part"
        self._fh: IO[bytes] | None = None
        self._staged: StagedBlob | None = None

    @property
    def md5(self) -> str:
        """The md5 of what was written so far (uploads may be checked against it)."""
        return self._md5.hexdigest()

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self.size + len(chunk) > self.max_bytes:
            self.abort()
            raise RequestTooLarge(
                f"The content exceeds the limit of {self.max_bytes} bytes.", param="file"
            )
        self.size += len(chunk)
        await asyncio.to_thread(self._write, chunk)

    def _write(self, chunk: bytes) -> None:
        if self._fh is None:
            self._fh = self._path.open("xb")
        self._fh.write(chunk)
        self._hash.update(chunk)
        self._md5.update(chunk)

    async def finish(self) -> StagedBlob:
        """Flush and fsync the temporary file; the returned blob must be attached or discarded."""
        await asyncio.to_thread(self._finish)
        self._staged = StagedBlob(self._hash.hexdigest(), self.size, self._path)
        return self._staged

    def _finish(self) -> None:
        if self._fh is None:
            self._fh = self._path.open("xb")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def abort(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        self._path.unlink(missing_ok=True)

    async def __aenter__(self) -> BlobWriter:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or self._staged is None:
            self.abort()


class BlobStore:
    """The content-addressed store under ``root`` (``<data_dir>/files``)."""

    def __init__(self, root: Path, db: Database) -> None:
        self.root = root
        self.db = db

    @property
    def tmp_dir(self) -> Path:
        return self.root / TMP_DIR

    def path(self, sha256: str) -> Path:
        """The file of a blob; only a lowercase sha256 hex digest is accepted."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def writer(self, *, max_bytes: int) -> BlobWriter:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return BlobWriter(self.tmp_dir, max_bytes)

    async def stage(
        self, chunks: AsyncIterable[bytes] | Iterable[bytes], *, max_bytes: int
    ) -> StagedBlob:
        """Stream ``chunks`` into a temporary file (``RequestTooLarge`` past ``max_bytes``)."""
        async with self.writer(max_bytes=max_bytes) as writer:
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    await writer.write(chunk)
            else:
                for chunk in chunks:
                    await writer.write(chunk)
            return await writer.finish()

    async def attach(self, session: AsyncSession, staged: StagedBlob) -> Blob:
        """Reference ``staged`` from a row written in ``session``; the temp file is consumed.

        Takes the blob row's lock (SQLite: the session's write lock) before touching the
        final path, so it never races ``collect`` of the same content.
        """
        insert = pg_insert if _dialect(session) == "postgresql" else sqlite_insert
        await session.execute(
            insert(BlobRecord)
            .values(sha256=staged.sha256, bytes=staged.bytes, refcount=0, created_at=now_s())
            .on_conflict_do_nothing(index_elements=["sha256"])
        )
        record = await _locked(session, staged.sha256)
        if record is None:  # pragma: no cover - the row was just ensured under the lock
            raise RuntimeError("blob row vanished under its lock")
        record.refcount += 1
        await session.flush()
        await asyncio.to_thread(self._materialise, staged)
        return Blob(staged.sha256, staged.bytes)

    def _materialise(self, staged: StagedBlob) -> None:
        final = self.path(staged.sha256)
        if final.exists():
            staged.discard()  # dedupe: the same bytes are already stored
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.temp_path, final)
        _fsync_dir(final.parent)

    async def detach(self, session: AsyncSession, sha256: str) -> None:
        """Drop one reference; call ``collect`` after the session commits to free the bytes."""
        record = await _locked(session, sha256)
        if record is not None and record.refcount > 0:
            record.refcount -= 1
            await session.flush()

    async def collect(self, sha256s: Iterable[str] | None = None) -> int:
        """Remove the files of unreferenced blobs (those given, or all); returns how many."""
        removed = 0
        async with self.db.session() as session:
            query = select(BlobRecord).where(BlobRecord.refcount <= 0)
            if sha256s is not None:
                wanted = sorted(set(sha256s))
                if not wanted:
                    return 0
                query = query.where(BlobRecord.sha256.in_(wanted))
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            for record in (await session.scalars(query)).all():
                await asyncio.to_thread(self.path(record.sha256).unlink, missing_ok=True)
                await session.delete(record)
                removed += 1
        return removed

    async def put(self, session: AsyncSession, data: bytes, *, max_bytes: int) -> Blob:
        """Stage and attach ``data`` in one call (small contents)."""
        staged = await self.stage([data], max_bytes=max_bytes)
        try:
            return await self.attach(session, staged)
        except BaseException:
            staged.discard()
            raise

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    async def read_bytes(self, sha256: str) -> bytes:
        try:
            return await asyncio.to_thread(self.path(sha256).read_bytes)
        except FileNotFoundError as exc:
            raise NotFound("The file's content is no longer stored.") from exc

    async def iter_bytes(self, sha256: str, chunk_size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The content in chunks, read in a thread (``NotFound`` when it is gone)."""
        try:
            fh = await asyncio.to_thread(self.path(sha256).open, "rb")
        except FileNotFoundError as exc:
            raise NotFound("The file's content is no longer stored.") from exc
        try:
            while chunk := await asyncio.to_thread(fh.read, chunk_size):
                yield chunk
        finally:
            fh.close()

    def sweep_tmp(self, older_than_s: float = STALE_TMP_S) -> int:
        """Delete temporary files a crash left behind; returns how many were removed."""
        if not self.tmp_dir.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in self.tmp_dir.iterdir():
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed


async def _locked(session: AsyncSession, sha256: str) -> BlobRecord | None:
    query = (
        select(BlobRecord)
        .where(BlobRecord.sha256 == sha256)
        .execution_options(populate_existing=True)
    )
    if _dialect(session) == "postgresql":
        query = query.with_for_update()
    record: BlobRecord | None = await session.scalar(query)
    return record


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
