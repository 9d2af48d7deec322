"""``/v1/vector_stores``: stores, their files, file batches and search.

Each route authenticates (``PrincipalDep``), makes one call to ``VectorStoreService`` in the
caller's project and returns its result.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from rixin.api.deps import PrincipalDep, ServicesDep
from rixin.schemas.vector_stores import (
    CreateVectorStoreFileBatchRequest,
    CreateVectorStoreFileRequest,
    CreateVectorStoreRequest,
    DeleteVectorStoreFileResponse,
    DeleteVectorStoreResponse,
    FileStatus,
    ListVectorStoreFilesResponse,
    ListVectorStoresResponse,
    UpdateVectorStoreFileAttributesRequest,
    UpdateVectorStoreRequest,
    VectorStoreFileBatchObject,
    VectorStoreFileContentResponse,
    VectorStoreFileObject,
    VectorStoreObject,
    VectorStoreSearchRequest,
    VectorStoreSearchResultsPage,
)
from rixin.services.vector_stores import VectorStoreService

router = APIRouter(prefix="/v1/vector_stores", tags=["vector_stores"])


async def get_vector_stores(services: ServicesDep) -> VectorStoreService:
    return services.vector_stores


StoresDep = Annotated[VectorStoreService, Depends(get_vector_stores)]
Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]


@router.post("")
async def create_vector_store(
    body: CreateVectorStoreRequest, stores: StoresDep, principal: PrincipalDep
) -> VectorStoreObject:
    return await stores.create(principal.project_id, body)


@router.get("")
async def list_vector_stores(
    stores: StoresDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
) -> ListVectorStoresResponse:
    page = await stores.list_stores(
        principal.project_id, limit=limit, order=order, after=after, before=before
    )
    return ListVectorStoresResponse(
        data=page.items,
        first_id=page.items[0].id if page.items else None,
        last_id=page.items[-1].id if page.items else None,
        has_more=page.has_more,
    )


@router.get("/{vector_store_id}")
async def retrieve_vector_store(
    vector_store_id: str, stores: StoresDep, principal: PrincipalDep
) -> VectorStoreObject:
    return await stores.retrieve(principal.project_id, vector_store_id)


@router.post("/{vector_store_id}")
async def modify_vector_store(
    vector_store_id: str,
    body: UpdateVectorStoreRequest,
    stores: StoresDep,
    principal: PrincipalDep,
) -> VectorStoreObject:
    return await stores.update(principal.project_id, vector_store_id, body)


@router.delete("/{vector_store_id}")
async def delete_vector_store(
    vector_store_id: str, stores: StoresDep, principal: PrincipalDep
) -> DeleteVectorStoreResponse:
    return DeleteVectorStoreResponse(id=await stores.delete(principal.project_id, vector_store_id))


@router.post("/{vector_store_id}/search")
async def search_vector_store(
    vector_store_id: str,
    body: VectorStoreSearchRequest,
    stores: StoresDep,
    principal: PrincipalDep,
) -> VectorStoreSearchResultsPage:
    return await stores.search(principal.project_id, vector_store_id, body)


# --- files ------------------------------------------------------------------------------------


@router.post("/{vector_store_id}/files")
async def create_vector_store_file(
    vector_store_id: str,
    body: CreateVectorStoreFileRequest,
    stores: StoresDep,
    principal: PrincipalDep,
) -> VectorStoreFileObject:
    return await stores.add_file(
        principal.project_id,
        vector_store_id,
        body.file_id,
        chunking=body.chunking_strategy,
        attributes=body.attributes,
        rixin=body.rixin,
    )


@router.get("/{vector_store_id}/files")
async def list_vector_store_files(
    vector_store_id: str,
    stores: StoresDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
    filter: FileStatus | None = None,  # noqa: A002 - OpenAI's parameter name
) -> ListVectorStoreFilesResponse:
    page = await stores.list_files(
        principal.project_id,
        vector_store_id,
        status=filter,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )
    return _files_page(page.items, page.has_more)


@router.get("/{vector_store_id}/files/{file_id}")
async def retrieve_vector_store_file(
    vector_store_id: str, file_id: str, stores: StoresDep, principal: PrincipalDep
) -> VectorStoreFileObject:
    return await stores.retrieve_file(principal.project_id, vector_store_id, file_id)


@router.post("/{vector_store_id}/files/{file_id}")
async def update_vector_store_file_attributes(
    vector_store_id: str,
    file_id: str,
    body: UpdateVectorStoreFileAttributesRequest,
    stores: StoresDep,
    principal: PrincipalDep,
) -> VectorStoreFileObject:
    return await stores.update_file(principal.project_id, vector_store_id, file_id, body.attributes)


@router.delete("/{vector_store_id}/files/{file_id}")
async def delete_vector_store_file(
    vector_store_id: str, file_id: str, stores: StoresDep, principal: PrincipalDep
) -> DeleteVectorStoreFileResponse:
    deleted = await stores.delete_file(principal.project_id, vector_store_id, file_id)
    return DeleteVectorStoreFileResponse(id=deleted)


@router.get("/{vector_store_id}/files/{file_id}/content")
async def retrieve_vector_store_file_content(
    vector_store_id: str, file_id: str, stores: StoresDep, principal: PrincipalDep
) -> VectorStoreFileContentResponse:
    return await stores.file_content(principal.project_id, vector_store_id, file_id)


# --- file batches -----------------------------------------------------------------------------


@router.post("/{vector_store_id}/file_batches")
async def create_vector_store_file_batch(
    vector_store_id: str,
    body: CreateVectorStoreFileBatchRequest,
    stores: StoresDep,
    principal: PrincipalDep,
) -> VectorStoreFileBatchObject:
    return await stores.create_batch(principal.project_id, vector_store_id, body)


@router.get("/{vector_store_id}/file_batches/{batch_id}")
async def retrieve_vector_store_file_batch(
    vector_store_id: str, batch_id: str, stores: StoresDep, principal: PrincipalDep
) -> VectorStoreFileBatchObject:
    return await stores.retrieve_batch(principal.project_id, vector_store_id, batch_id)


@router.post("/{vector_store_id}/file_batches/{batch_id}/cancel")
async def cancel_vector_store_file_batch(
    vector_store_id: str, batch_id: str, stores: StoresDep, principal: PrincipalDep
) -> VectorStoreFileBatchObject:
    return await stores.cancel_batch(principal.project_id, vector_store_id, batch_id)


@router.get("/{vector_store_id}/file_batches/{batch_id}/files")
async def list_vector_store_file_batch_files(
    vector_store_id: str,
    batch_id: str,
    stores: StoresDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
    filter: FileStatus | None = None,  # noqa: A002 - OpenAI's parameter name
) -> ListVectorStoreFilesResponse:
    page = await stores.list_files(
        principal.project_id,
        vector_store_id,
        batch_id=batch_id,
        status=filter,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )
    return _files_page(page.items, page.has_more)


def _files_page(items: list[VectorStoreFileObject], has_more: bool) -> ListVectorStoreFilesResponse:
    return ListVectorStoreFilesResponse(
        data=items,
        first_id=items[0].id if items else None,
        last_id=items[-1].id if items else None,
        has_more=has_more,
    )
