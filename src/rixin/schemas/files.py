"""Files and Uploads, as in OpenAI's Files and Uploads APIs.

Shapes follow ``openapi.yaml`` (``OpenAIFile``, ``ListFilesResponse``, ``DeleteFileResponse``,
``FileExpirationAfter``, ``CreateUploadRequest``, ``CompleteUploadRequest``, ``Upload``,
``UploadPart``), same names and field order. ``POST /v1/files`` and
``POST /v1/uploads/{id}/parts`` are multipart bodies, parsed by ``rixin.api.files``.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from rixin.schemas.common import OpenAIBaseModel

FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
FILE_PURPOSES: tuple[str, ...] = get_args(FilePurpose)
UploadStatus = Literal["pending", "completed", "cancelled", "expired"]

MIN_EXPIRES_AFTER_S = 3600
MAX_EXPIRES_AFTER_S = 2592000


class OpenAIFile(OpenAIBaseModel):
    id: str
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    object: Literal["file"] = "file"
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class ListFilesResponse(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFile]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class DeleteFileResponse(OpenAIBaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class FileExpirationAfter(OpenAIBaseModel):
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(ge=MIN_EXPIRES_AFTER_S, le=MAX_EXPIRES_AFTER_S)


class CreateUploadRequest(OpenAIBaseModel):
    filename: str
    purpose: FilePurpose
    bytes: int = Field(ge=0)
    mime_type: str = Field(max_length=255)
    expires_after: FileExpirationAfter | None = None


class CompleteUploadRequest(OpenAIBaseModel):
    part_ids: list[str]
    md5: str | None = None


class Upload(OpenAIBaseModel):
    id: str
    created_at: int
    filename: str
    bytes: int
    purpose: str
    status: UploadStatus
    expires_at: int
    object: Literal["upload"] = "upload"
    file: OpenAIFile | None = None


class UploadPart(OpenAIBaseModel):
    id: str
    created_at: int
    upload_id: str
    object: Literal["upload.part"] = "upload.part"
