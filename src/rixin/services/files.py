"""Files and uploads of a project: records in the store, bytes in the blob store.

Every lookup is by (project, id): another project's file or upload is exactly as absent as one
that never existed (A1). Filenames are display strings only, sanitised here; the bytes live under
their sha256 (B7).

Size limits. ``POST /v1/files`` and each upload part are single request bodies, so the edge
limit ``Settings.max_body_bytes`` (8 MiB by default) caps them before any parsing; files larger
than that go through ``/v1/uploads`` in parts of at most ``max_body_bytes`` each (OpenAI allows
64 MB parts; clients must use smaller ones here). The constants below are the service's own caps.
"""

from __future__ import annotations

import asyncio
import builtins
import hmac
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from rixin.errors import InvalidRequest, NotFound
from rixin.schemas.files import FILE_PURPOSES, MAX_EXPIRES_AFTER_S, MIN_EXPIRES_AFTER_S
from rixin.store.blobs import BlobStore, BlobWriter, StagedBlob
from rixin.store.db import Database
from rixin.store.ids import base62
from rixin.store.records import now_s
from rixin.store.records_files import FileRecord, UploadPartRecord, UploadRecord

MAX_FILE_BYTES = 512 * 1024 * 1024
"""OpenAI's cap on one file (and so on a completed upload's declared ``bytes``)."""
MAX_UPLOAD_BYTES = 8 * 1024 * 1024 * 1024
"""OpenAI's cap on an upload."""
MAX_PART_BYTES = 64 * 1024 * 1024
"""OpenAI's cap on one part; the edge's ``max_body_bytes`` is usually the tighter one."""
MAX_UPLOAD_PARTS = 10_000
UPLOAD_TTL_S = 3600
"""An upload not completed within an hour expires, as at OpenAI."""
BATCH_FILE_TTL_S = 30 * 24 * 3600
"""Files with ``purpose=batch`` expire after 30 days unless ``expires_after`` says otherwise."""
MAX_FILENAME_CHARS = 255
MAX_LIST_LIMIT = 10_000

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class FilePage:
    items: list[FileRecord]
    has_more: bool


@dataclass(frozen=True)
class CompletedUpload:
    upload: UploadRecord
    file: FileRecord


def file_id() -> str:
    """``file-…`` with 128 random bits, spelled like OpenAI's ids."""
    return f"file-{base62(secrets.token_bytes(16))}"


def clean_filename(raw: str | None) -> str:
    """A display name: the last path segment, printable characters only, at most 255 chars."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if not name.strip("."):
        return "file"
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16 and stem:
            name = f"{stem[: MAX_FILENAME_CHARS - len(ext) - 1]}.{ext}"
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name


def check_purpose(purpose: str | None) -> str:
    if purpose not in FILE_PURPOSES:
        raise InvalidRequest(
            f"Invalid value for 'purpose': expected one of {', '.join(FILE_PURPOSES)}.",
            param="purpose",
        )
    return purpose


def check_expires_after(anchor: str | None, seconds: int | None) -> int | None:
    """Seconds after ``created_at`` at which the file expires (validated), or None."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "expires_after.anchor must be 'created_at'.", param="expires_after.anchor"
        )
    if seconds is None or not MIN_EXPIRES_AFTER_S <= seconds <= MAX_EXPIRES_AFTER_S:
        raise InvalidRequest(
            f"expires_after.seconds must be between {MIN_EXPIRES_AFTER_S} and "
            f"{MAX_EXPIRES_AFTER_S}.",
            param="expires_after.seconds",
        )
    return seconds


class FileService:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs

    # -- files -----------------------------------------------------------------------------

    def writer(self, max_bytes: int = MAX_FILE_BYTES) -> BlobWriter:
        """Where a new file's bytes are streamed before ``create``."""
        return self.blobs.writer(max_bytes=min(max_bytes, MAX_FILE_BYTES))

    async def create(
        self,
        project_id: str,
        staged: StagedBlob,
        *,
        filename: str | None,
        purpose: str,
        expires_after_s: int | None = None,
    ) -> FileRecord:
        """A file of ``staged`` bytes; the staged temp file is consumed (or discarded on error)."""
        try:
            check_purpose(purpose)
            async with self.db.session() as session:
                return await self._add_file(
                    session, project_id, staged, filename, purpose, expires_after_s
                )
        finally:
            staged.discard()  # no-op once attach moved it into place

    async def put_bytes(
        self, project_id: str, data: bytes, *, filename: str, purpose: str = "user_data"
    ) -> FileRecord:
        """A file from bytes in memory (for services and tests)."""
        staged = await self.blobs.stage([data], max_bytes=MAX_FILE_BYTES)
        return await self.create(project_id, staged, filename=filename, purpose=purpose)

    async def put_output(self, project_id: str, data: bytes, *, filename: str) -> FileRecord:
        """A file a tool produced: purpose ``assistants_output``, which clients cannot upload."""
        staged = await self.blobs.stage([data], max_bytes=MAX_FILE_BYTES)
        try:
            async with self.db.session() as session:
                return await self._add_file(
                    session, project_id, staged, filename, "assistants_output", None
                )
        finally:
            staged.discard()

    async def _add_file(
        self,
        session: AsyncSession,
        project_id: str,
        staged: StagedBlob,
        filename: str | None,
        purpose: str,
        expires_after_s: int | None,
    ) -> FileRecord:
        blob = await self.blobs.attach(session, staged)
        created_ms = int(time.time() * 1000)
        created = created_ms // 1000
        if expires_after_s is None and purpose == "batch":
            expires_after_s = BATCH_FILE_TTL_S
        record = FileRecord(
            id=file_id(),
            project_id=project_id,
            filename=clean_filename(filename),
            purpose=purpose,
            bytes=blob.bytes,
            sha256=blob.sha256,
            status="processed",
            created_at=created,
            created_at_ms=created_ms,
            expires_at=created + expires_after_s if expires_after_s is not None else None,
        )
        session.add(record)
        await session.flush()
        return record

    async def list(
        self,
        project_id: str,
        *,
        limit: int = MAX_LIST_LIMIT,
        after: str | None = None,
        order: Order = "desc",
        purpose: str | None = None,
    ) -> FilePage:
        limit = max(1, min(MAX_LIST_LIMIT, limit))
        query = select(FileRecord).where(FileRecord.project_id == project_id, _live())
        if purpose is not None:
            query = query.where(FileRecord.purpose == purpose)
        async with self.db.session(readonly=True) as session:
            if after is not None:
                cursor = await _file(session, project_id, after, param="after")
                query = query.where(_after(cursor, order))
            columns = (FileRecord.created_at_ms, FileRecord.id)
            ordering = columns if order == "asc" else tuple(c.desc() for c in columns)
            rows = (await session.scalars(query.order_by(*ordering).limit(limit + 1))).all()
        return FilePage(items=list(rows[:limit]), has_more=len(rows) > limit)

    async def retrieve(self, project_id: str, file_id: str) -> FileRecord:
        async with self.db.session(readonly=True) as session:
            return await _file(session, project_id, file_id)

    async def delete(self, project_id: str, file_id: str) -> FileRecord:
        """Delete the file; its bytes go too unless another file has the same content."""
        async with self.db.session() as session:
            record = await _file(session, project_id, file_id)
            await session.delete(record)
            await self.blobs.detach(session, record.sha256)
        await self.blobs.collect([record.sha256])
        return record

    async def content(
        self, project_id: str, file_id: str
    ) -> tuple[FileRecord, AsyncIterator[bytes]]:
        """The file and an iterator over its bytes."""
        record = await self.retrieve(project_id, file_id)
        if not await asyncio.to_thread(self.blobs.exists, record.sha256):
            raise NotFound(f"No content stored for file '{file_id}'.", param="file_id")
        return record, self.blobs.iter_bytes(record.sha256)

    async def read_bytes(self, project_id: str, file_id: str) -> bytes:
        record = await self.retrieve(project_id, file_id)
        return await self.blobs.read_bytes(record.sha256)

    def content_path(self, record: FileRecord) -> Path:
        """Where a file's bytes are on disk (read-only; for parsers run in a subprocess)."""
        return self.blobs.path(record.sha256)

    # -- uploads ---------------------------------------------------------------------------

    async def create_upload(
        self,
        project_id: str,
        *,
        filename: str,
        purpose: str,
        bytes: int,
        mime_type: str,
        expires_after_s: int | None = None,
    ) -> UploadRecord:
        check_purpose(purpose)
        if not 0 < bytes <= min(MAX_UPLOAD_BYTES, MAX_FILE_BYTES):
            raise InvalidRequest(
                f"bytes must be between 1 and {min(MAX_UPLOAD_BYTES, MAX_FILE_BYTES)}.",
                param="bytes",
            )
        if not mime_type.strip() or not mime_type.isprintable():
            raise InvalidRequest("mime_type must be a MIME type.", param="mime_type")
        created = now_s()
        record = UploadRecord(
            id=f"upload_{base62(secrets.token_bytes(16))}",
            project_id=project_id,
            filename=clean_filename(filename),
            purpose=purpose,
            bytes=bytes,
            mime_type=mime_type.strip(),
            status="pending",
            file_expires_after_s=expires_after_s,
            created_at=created,
            expires_at=created + UPLOAD_TTL_S,
        )
        async with self.db.session() as session:
            session.add(record)
        return record

    async def retrieve_upload(self, project_id: str, upload_id: str) -> UploadRecord:
        async with self.db.session(readonly=True) as session:
            return await _upload(session, project_id, upload_id)

    async def part_writer(self, project_id: str, upload_id: str) -> BlobWriter:
        """A writer for the next part, limited to what the upload still lacks (404 first)."""
        async with self.db.session(readonly=True) as session:
            upload = _pending(await _upload(session, project_id, upload_id))
            received, count = await _received(session, upload.id)
        if count >= MAX_UPLOAD_PARTS:
            raise InvalidRequest(f"An upload has at most {MAX_UPLOAD_PARTS} parts.", param="data")
        remaining = upload.bytes - received
        if remaining <= 0:
            raise InvalidRequest("The upload already has all its bytes.", param="data")
        return self.blobs.writer(max_bytes=min(MAX_PART_BYTES, remaining))

    async def add_part(
        self, project_id: str, upload_id: str, staged: StagedBlob
    ) -> UploadPartRecord:
        try:
            if staged.bytes == 0:
                raise InvalidRequest("A part must not be empty.", param="data")
            async with self.db.session() as session:
                upload = _pending(await _upload(session, project_id, upload_id, lock=True))
                received, _count = await _received(session, upload.id)
                if received + staged.bytes > upload.bytes:
                    raise InvalidRequest(
                        "The parts would exceed the upload's declared bytes.", param="data"
                    )
                blob = await self.blobs.attach(session, staged)
                part = UploadPartRecord(
                    id=f"part_{base62(secrets.token_bytes(16))}",
                    upload_id=upload.id,
                    sha256=blob.sha256,
                    bytes=blob.bytes,
                    created_at=now_s(),
                )
                session.add(part)
            return part
        finally:
            staged.discard()

    async def complete_upload(
        self, project_id: str, upload_id: str, part_ids: Sequence[str], md5: str | None = None
    ) -> CompletedUpload:
        """Concatenate the parts in ``part_ids`` order into a new file."""
        if md5 is not None and not _MD5.fullmatch(md5):
            raise InvalidRequest("md5 must be 32 hexadecimal digits.", param="md5")
        async with self.db.session(readonly=True) as session:
            upload = _pending(await _upload(session, project_id, upload_id))
            parts = await _ordered_parts(session, upload, part_ids)
        staged = await self._concatenate(upload, parts, md5)
        try:
            async with self.db.session() as session:
                upload = _pending(await _upload(session, project_id, upload_id, lock=True))
                record = await self._add_file(
                    session,
                    project_id,
                    staged,
                    upload.filename,
                    upload.purpose,
                    upload.file_expires_after_s,
                )
                upload.status, upload.file_id = "completed", record.id
                released = await self._drop_parts(session, upload.id)
        finally:
            staged.discard()
        await self.blobs.collect(released)
        return CompletedUpload(upload=upload, file=record)

    async def _concatenate(
        self, upload: UploadRecord, parts: Sequence[UploadPartRecord], md5: str | None
    ) -> StagedBlob:
        async with self.blobs.writer(max_bytes=upload.bytes) as writer:
            for part in parts:
                async for chunk in self.blobs.iter_bytes(part.sha256):
                    await writer.write(chunk)
            if md5 is not None and not hmac.compare_digest(writer.md5, md5.lower()):
                raise InvalidRequest("The md5 of the parts does not match 'md5'.", param="md5")
            return await writer.finish()

    async def cancel_upload(self, project_id: str, upload_id: str) -> UploadRecord:
        async with self.db.session() as session:
            upload = _pending(await _upload(session, project_id, upload_id, lock=True))
            upload.status = "cancelled"
            released = await self._drop_parts(session, upload.id)
        await self.blobs.collect(released)
        return upload

    async def _drop_parts(self, session: AsyncSession, upload_id: str) -> builtins.list[str]:
        parts = (
            await session.scalars(
                select(UploadPartRecord).where(UploadPartRecord.upload_id == upload_id)
            )
        ).all()
        for part in parts:
            await self.blobs.detach(session, part.sha256)
        await session.execute(
            delete(UploadPartRecord).where(UploadPartRecord.upload_id == upload_id)
        )
        return [part.sha256 for part in parts]


def _live() -> ColumnElement[bool]:
    now = now_s()
    return or_(FileRecord.expires_at.is_(None), FileRecord.expires_at > now)


def _after(cursor: FileRecord, order: Order) -> ColumnElement[bool]:
    if order == "asc":
        return or_(
            FileRecord.created_at_ms > cursor.created_at_ms,
            and_(FileRecord.created_at_ms == cursor.created_at_ms, FileRecord.id > cursor.id),
        )
    return or_(
        FileRecord.created_at_ms < cursor.created_at_ms,
        and_(FileRecord.created_at_ms == cursor.created_at_ms, FileRecord.id < cursor.id),
    )


async def _file(
    session: AsyncSession, project_id: str, file_id: str, *, param: str = "file_id"
) -> FileRecord:
    record = await session.get(FileRecord, file_id) if _ID.fullmatch(file_id) else None
    expired = record is not None and record.expires_at is not None and record.expires_at <= now_s()
    if record is None or record.project_id != project_id or expired:
        raise NotFound(f"No such File object: {file_id[:64]}", param=param)
    return record


async def _upload(
    session: AsyncSession, project_id: str, upload_id: str, *, lock: bool = False
) -> UploadRecord:
    record = None
    if _ID.fullmatch(upload_id):
        query = select(UploadRecord).where(UploadRecord.id == upload_id)
        if lock and session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        record = await session.scalar(query.execution_options(populate_existing=True))
    if record is None or record.project_id != project_id:
        raise NotFound(f"No such Upload object: {upload_id[:64]}", param="upload_id")
    return record


def _pending(upload: UploadRecord) -> UploadRecord:
    if upload.status == "pending" and upload.expires_at <= now_s():
        raise InvalidRequest(f"Upload {upload.id} has expired.", param="upload_id")
    if upload.status != "pending":
        raise InvalidRequest(f"Upload {upload.id} is already {upload.status}.", param="upload_id")
    return upload


async def _received(session: AsyncSession, upload_id: str) -> tuple[int, int]:
    row = (
        await session.execute(
            select(func.coalesce(func.sum(UploadPartRecord.bytes), 0), func.count()).where(
                UploadPartRecord.upload_id == upload_id
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def _ordered_parts(
    session: AsyncSession, upload: UploadRecord, part_ids: Sequence[str]
) -> list[UploadPartRecord]:
    if not part_ids:
        raise InvalidRequest("part_ids must name at least one part.", param="part_ids")
    if len(set(part_ids)) != len(part_ids):
        raise InvalidRequest("part_ids must not repeat a part.", param="part_ids")
    wanted = [p for p in part_ids if _ID.fullmatch(p)]
    rows = (
        await session.scalars(
            select(UploadPartRecord).where(
                UploadPartRecord.upload_id == upload.id, UploadPartRecord.id.in_(wanted)
            )
        )
    ).all()
    by_id = {row.id: row for row in rows}
    missing = [p for p in part_ids if p not in by_id]
    if missing:
        raise InvalidRequest(f"No such part in this upload: {missing[0][:64]}", param="part_ids")
    parts = [by_id[p] for p in part_ids]
    total = sum(p.bytes for p in parts)
    if total != upload.bytes:
        raise InvalidRequest(
            f"The parts hold {total} bytes but the upload declared {upload.bytes}.",
            param="part_ids",
        )
    return parts
