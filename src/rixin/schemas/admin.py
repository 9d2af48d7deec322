"""Projects and project API keys, as in OpenAI's Administration API.

Shapes follow ``openapi.yaml`` (``Project``, ``ProjectListResponse``, ``ProjectApiKey``,
``ProjectApiKeyListResponse``, ``ProjectApiKeyDeleteResponse``, ``ProjectCreateRequest``,
``ProjectUpdateRequest``), same names and field order. rixin's additions sit in marked blocks:
OpenAI mints project keys only in its dashboard, rixin through
``POST /v1/organization/projects/{project_id}/api_keys``.
"""

from __future__ import annotations

from typing import Literal

from rixin.schemas.common import OpenAIBaseModel


class Project(OpenAIBaseModel):
    id: str
    object: Literal["organization.project"] = "organization.project"
    name: str | None = None
    created_at: int
    archived_at: int | None = None
    status: str | None = None
    external_key_id: str | None = None


class ProjectListResponse(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[Project]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ProjectCreateRequest(OpenAIBaseModel):
    name: str
    external_key_id: str | None = None


class ProjectUpdateRequest(OpenAIBaseModel):
    name: str | None = None
    external_key_id: str | None = None


class ProjectApiKeyOwnerServiceAccount(OpenAIBaseModel):
    id: str
    name: str
    created_at: int
    role: str


class ProjectApiKeyOwner(OpenAIBaseModel):
    type: Literal["user", "service_account"] = "service_account"
    service_account: ProjectApiKeyOwnerServiceAccount | None = None


class ProjectApiKey(OpenAIBaseModel):
    object: Literal["organization.project.api_key"] = "organization.project.api_key"
    redacted_value: str
    name: str
    created_at: int
    last_used_at: int | None = None
    id: str
    owner_project_access: Literal["active", "inactive"] = "active"
    owner: ProjectApiKeyOwner
    # --- rixin extension -------------------------------------------------------------------
    role: Literal["admin", "member"]
    """``admin`` keys manage projects and keys; ``member`` keys use the API in their project."""


class ProjectApiKeyListResponse(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ProjectApiKey]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ProjectApiKeyDeleteResponse(OpenAIBaseModel):
    object: Literal["organization.project.api_key.deleted"] = "organization.project.api_key.deleted"
    id: str
    deleted: bool = True


# --- rixin extension: minting keys ---------------------------------------------------------


class ProjectApiKeyCreateRequest(OpenAIBaseModel):
    """rixin extension: a new key for the project."""

    name: str
    role: Literal["admin", "member"] = "member"


class ProjectApiKeyCreated(ProjectApiKey):
    """rixin extension: the new key, with its secret ``value`` (shown this once, never again)."""

    value: str
