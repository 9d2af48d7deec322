"""``/v1/responses``: create (plain, streamed, background), read, delete, cancel, input items."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rixin.api.deps import PrincipalDep, ServicesDep
from rixin.api.sse import SSE_HEADERS
from rixin.schemas.responses import CreateResponse, DeletedResponse

router = APIRouter(prefix="/v1/responses", tags=["responses"])

Limit = Annotated[int, Query(ge=1, le=100)]


class EventStreamResponse(StreamingResponse):
    """SSE that stops producing as soon as the client disconnects, whatever the ASGI version
    (generation is cancelled by the generator's ``finally``: RELIABILITY F5)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


@router.post("")
async def create_response(
    body: CreateResponse, services: ServicesDep, principal: PrincipalDep
) -> Response:
    result = await services.responses.create(principal.project_id, body)
    if isinstance(result, dict):
        return JSONResponse(result)
    return EventStreamResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/{response_id}")
async def retrieve_response(
    response_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.responses.retrieve(principal.project_id, response_id)


@router.delete("/{response_id}")
async def delete_response(
    response_id: str, services: ServicesDep, principal: PrincipalDep
) -> DeletedResponse:
    return await services.responses.delete(principal.project_id, response_id)


@router.post("/{response_id}/cancel")
async def cancel_response(
    response_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.responses.cancel(principal.project_id, response_id)


@router.get("/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    return await services.responses.input_items(
        principal.project_id, response_id, limit=limit, order=order, after=after
    )
