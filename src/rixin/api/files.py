"""Files (``/v1/files``) and Uploads (``/v1/uploads``) routes.

Multipart bodies are parsed here as a stream (``python-multipart``): the file part goes straight
into a blob writer under the data dir (no spooling elsewhere), and a body with a huge boundary,
too many parts, oversized fields or malformed framing is refused at once with 400 (B2). The edge
has already refused bodies over ``Settings.max_body_bytes`` with 413; files above that size are
sent with ``/v1/uploads`` in parts that each fit the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from rixin.api.deps import PrincipalDep, ServicesDep
from rixin.errors import InvalidRequest
from rixin.schemas.files import (
    CompleteUploadRequest,
    CreateUploadRequest,
    DeleteFileResponse,
    ListFilesResponse,
    OpenAIFile,
    Upload,
    UploadPart,
    UploadStatus,
)
from rixin.services.files import MAX_LIST_LIMIT, check_expires_after, check_purpose
from rixin.store.blobs import BlobWriter
from rixin.store.records_files import FileRecord, UploadRecord

router = APIRouter(tags=["files"])

MAX_BOUNDARY_BYTES = 200
"""RFC 2046 allows 70; anything far longer is an attack on the parser (CVE-2024-8984)."""
MAX_FORM_PARTS = 8
MAX_FIELD_BYTES = 4096
MAX_PART_HEADER_BYTES = 8192


@router.post("/v1/files", response_model_exclude_none=True)
async def create_file(
    request: Request, services: ServicesDep, principal: PrincipalDep
) -> OpenAIFile:
    async with services.files.writer() as writer:
        form = await read_form(request, "file", writer)
        if not form.has_file:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        purpose = check_purpose(form.fields.get("purpose"))
        expires = _expires_after(form.fields)
        staged = await writer.finish()
    record = await services.files.create(
        principal.project_id,
        staged,
        filename=form.filename,
        purpose=purpose,
        expires_after_s=expires,
    )
    return file_view(record)


@router.get("/v1/files", response_model_exclude_none=True)
async def list_files(
    services: ServicesDep,
    principal: PrincipalDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = MAX_LIST_LIMIT,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    after: str | None = None,
) -> ListFilesResponse:
    page = await services.files.list(
        principal.project_id,
        limit=limit,
        after=after,
        order="asc" if order == "asc" else "desc",
        purpose=purpose,
    )
    data = [file_view(f) for f in page.items]
    return ListFilesResponse(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


@router.get("/v1/files/{file_id}", response_model_exclude_none=True)
async def retrieve_file(file_id: str, services: ServicesDep, principal: PrincipalDep) -> OpenAIFile:
    return file_view(await services.files.retrieve(principal.project_id, file_id))


@router.delete("/v1/files/{file_id}")
async def delete_file(
    file_id: str, services: ServicesDep, principal: PrincipalDep
) -> DeleteFileResponse:
    record = await services.files.delete(principal.project_id, file_id)
    return DeleteFileResponse(id=record.id, deleted=True)


@router.get("/v1/files/{file_id}/content")
async def file_content(
    file_id: str, services: ServicesDep, principal: PrincipalDep
) -> StreamingResponse:
    record, chunks = await services.files.content(principal.project_id, file_id)
    headers = {"Content-Length": str(record.bytes), "X-Content-Type-Options": "nosniff"}
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)


@router.post("/v1/uploads", response_model_exclude_none=True)
async def create_upload(
    body: CreateUploadRequest, services: ServicesDep, principal: PrincipalDep
) -> Upload:
    expires = body.expires_after
    record = await services.files.create_upload(
        principal.project_id,
        filename=body.filename,
        purpose=body.purpose,
        bytes=body.bytes,
        mime_type=body.mime_type,
        expires_after_s=expires.seconds if expires is not None else None,
    )
    return upload_view(record)


@router.post("/v1/uploads/{upload_id}/parts")
async def add_upload_part(
    upload_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> UploadPart:
    async with await services.files.part_writer(principal.project_id, upload_id) as writer:
        form = await read_form(request, "data", writer)
        if not form.has_file:
            raise InvalidRequest("Missing required parameter: 'data'.", param="data")
        staged = await writer.finish()
    part = await services.files.add_part(principal.project_id, upload_id, staged)
    return UploadPart(id=part.id, created_at=part.created_at, upload_id=part.upload_id)


@router.post("/v1/uploads/{upload_id}/complete", response_model_exclude_none=True)
async def complete_upload(
    upload_id: str, body: CompleteUploadRequest, services: ServicesDep, principal: PrincipalDep
) -> Upload:
    done = await services.files.complete_upload(
        principal.project_id, upload_id, body.part_ids, body.md5
    )
    return upload_view(done.upload, done.file)


@router.post("/v1/uploads/{upload_id}/cancel", response_model_exclude_none=True)
async def cancel_upload(upload_id: str, services: ServicesDep, principal: PrincipalDep) -> Upload:
    return upload_view(await services.files.cancel_upload(principal.project_id, upload_id))


def file_view(record: FileRecord) -> OpenAIFile:
    return OpenAIFile(
        id=record.id,
        bytes=record.bytes,
        created_at=record.created_at,
        expires_at=record.expires_at,
        filename=record.filename,
        purpose=record.purpose,
        status="processed",
    )


def upload_view(record: UploadRecord, file: FileRecord | None = None) -> Upload:
    return Upload(
        id=record.id,
        created_at=record.created_at,
        filename=record.filename,
        bytes=record.bytes,
        purpose=record.purpose,
        status=cast(UploadStatus, record.status),
        expires_at=record.expires_at,
        file=file_view(file) if file is not None else None,
    )


def _expires_after(fields: dict[str, str]) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if seconds is not None and not seconds.isdigit():
        raise InvalidRequest(
            "expires_after.seconds must be an integer.", param="expires_after.seconds"
        )
    return check_expires_after(anchor, int(seconds) if seconds is not None else None)


# -- streaming multipart/form-data ------------------------------------------------------------


@dataclass
class Form:
    """The text fields of a form and whether (and under which name) its file part came."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    has_file: bool = False


class _FormReader:
    """python-multipart callbacks; file bytes are queued for the async writer, fields kept."""

    def __init__(self, file_field: str) -> None:
        self.file_field = file_field
        self.form = Form()
        self.pending: list[bytes] = []
        self.parts = 0
        self.ended = False
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._name = b""
        self._value = b""
        self._field: str | None = None
        self._in_file = False
        self._data = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_FORM_PARTS:
            raise InvalidRequest(f"A form may have at most {MAX_FORM_PARTS} parts.")
        self._headers, self._header_bytes = {}, 0
        self._field, self._in_file, self._data = None, False, bytearray()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise InvalidRequest("A form part's headers are too large.")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition"))
        name = params.get(b"name")
        if disposition != b"form-data" or name is None:
            raise InvalidRequest("Each form part needs a Content-Disposition with a name.")
        field_name = name.decode("utf-8", "replace")
        if field_name == self.file_field:
            if self.form.has_file:
                raise InvalidRequest(f"Only one '{self.file_field}' part is allowed.")
            self.form.has_file, self._in_file = True, True
            raw = params.get(b"filename")
            self.form.filename = raw.decode("utf-8", "replace") if raw is not None else None
        else:
            self._field = field_name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.pending.append(data[start:end])
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"Form field '{self._field}' is too long.", param=self._field)

    def on_part_end(self) -> None:
        if self._field is not None:
            try:
                self.form.fields[self._field] = self._data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequest("Form fields must be UTF-8.", param=self._field) from exc

    def on_end(self) -> None:
        self.ended = True


async def read_form(request: Request, file_field: str, writer: BlobWriter) -> Form:
    """Parse a multipart body, streaming the ``file_field`` part into ``writer``."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise InvalidRequest("The body must be multipart/form-data.", param=file_field)
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > MAX_BOUNDARY_BYTES:
        raise InvalidRequest("The multipart boundary is missing or too long.", param=file_field)
    reader = _FormReader(file_field)
    parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for data in reader.pending:
                await writer.write(data)
            reader.pending.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidRequest("The multipart body is malformed.", param=file_field) from exc
    if not reader.ended:
        raise InvalidRequest("The multipart body ended early.", param=file_field)
    return reader.form
