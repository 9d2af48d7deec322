"""Administration routes: projects and their API keys (OpenAI's ``/v1/organization/projects``).

Every route needs an admin key; a member key gets 403 from ``AdminDep``. Each route makes one
service call and shapes its result.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from rixin.api.deps import AdminDep, AuthDep
from rixin.schemas.admin import (
    Project,
    ProjectApiKey,
    ProjectApiKeyCreated,
    ProjectApiKeyCreateRequest,
    ProjectApiKeyDeleteResponse,
    ProjectApiKeyListResponse,
    ProjectApiKeyOwner,
    ProjectApiKeyOwnerServiceAccount,
    ProjectCreateRequest,
    ProjectListResponse,
    ProjectUpdateRequest,
)
from rixin.store.records import ApiKeyRecord, ProjectRecord

router = APIRouter(prefix="/v1/organization/projects", tags=["administration"])

Limit = Annotated[int, Query(ge=1, le=100)]


@router.get("")
async def list_projects(
    auth: AuthDep,
    _admin: AdminDep,
    limit: Limit = 20,
    after: str | None = None,
    include_archived: bool = False,
) -> ProjectListResponse:
    page = await auth.list_projects(limit=limit, after=after, include_archived=include_archived)
    data = [project_view(p) for p in page.items]
    return ProjectListResponse(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


@router.post("")
async def create_project(body: ProjectCreateRequest, auth: AuthDep, admin: AdminDep) -> Project:
    return project_view(await auth.create_project(body.name, actor=admin))


@router.get("/{project_id}")
async def retrieve_project(project_id: str, auth: AuthDep, _admin: AdminDep) -> Project:
    return project_view(await auth.retrieve_project(project_id))


@router.post("/{project_id}")
async def modify_project(
    project_id: str, body: ProjectUpdateRequest, auth: AuthDep, admin: AdminDep
) -> Project:
    return project_view(await auth.modify_project(project_id, name=body.name, actor=admin))


@router.post("/{project_id}/archive")
async def archive_project(project_id: str, auth: AuthDep, admin: AdminDep) -> Project:
    return project_view(await auth.archive_project(project_id, actor=admin))


@router.get("/{project_id}/api_keys")
async def list_keys(
    project_id: str,
    auth: AuthDep,
    _admin: AdminDep,
    limit: Limit = 20,
    after: str | None = None,
) -> ProjectApiKeyListResponse:
    page = await auth.list_keys(project_id, limit=limit, after=after)
    data = [key_view(k) for k in page.items]
    return ProjectApiKeyListResponse(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=page.has_more,
    )


@router.post("/{project_id}/api_keys")
async def create_key(
    project_id: str,
    body: ProjectApiKeyCreateRequest,
    auth: AuthDep,
    admin: AdminDep,
    response: Response,
) -> ProjectApiKeyCreated:
    """rixin extension. The body carries the secret: no cache, and no idempotency replay store."""
    response.headers["Cache-Control"] = "no-store"
    created = await auth.create_key(project_id, name=body.name, role=body.role, actor=admin)
    return ProjectApiKeyCreated(**key_view(created.record).model_dump(), value=created.value)


@router.get("/{project_id}/api_keys/{key_id}")
async def retrieve_key(
    project_id: str, key_id: str, auth: AuthDep, _admin: AdminDep
) -> ProjectApiKey:
    return key_view(await auth.retrieve_key(project_id, key_id))


@router.delete("/{project_id}/api_keys/{key_id}")
async def delete_key(
    project_id: str, key_id: str, auth: AuthDep, admin: AdminDep
) -> ProjectApiKeyDeleteResponse:
    record = await auth.revoke_key(project_id, key_id, actor=admin)
    return ProjectApiKeyDeleteResponse(id=record.id, deleted=True)


def project_view(record: ProjectRecord) -> Project:
    return Project(
        id=record.id,
        name=record.name,
        created_at=record.created_at,
        archived_at=record.archived_at,
        status=record.status,
    )


def key_view(record: ApiKeyRecord) -> ProjectApiKey:
    owner = ProjectApiKeyOwnerServiceAccount(
        id=record.id, name=record.name, created_at=record.created_at, role=record.role
    )
    return ProjectApiKey(
        redacted_value=record.redacted_value,
        name=record.name,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        id=record.id,
        owner=ProjectApiKeyOwner(type="service_account", service_account=owner),
        role="admin" if record.role == "admin" else "member",
    )
