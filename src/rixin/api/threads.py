"""``/v1/threads`` (Assistants v2): threads, their messages, runs and run steps.

Each route authenticates, makes one call to the threads or runs service in the caller's project
and returns its result; a streamed run is sent as server-sent events that stop (and cancel the
run) when the client goes away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from starlette.responses import Response

from rixin.api.deps import PrincipalDep, ServicesDep
from rixin.api.responses import EventStreamResponse
from rixin.api.sse import SSE_HEADERS
from rixin.schemas.assistants import (
    CreateMessageRequest,
    CreateRunRequest,
    CreateThreadAndRunRequest,
    CreateThreadRequest,
    DeleteMessageResponse,
    DeleteThreadResponse,
    ModifyMessageRequest,
    ModifyRunRequest,
    ModifyThreadRequest,
    SubmitToolOutputsRunRequest,
)

router = APIRouter(prefix="/v1/threads", tags=["assistants"])

Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]


def _reply(result: dict[str, Any] | AsyncIterator[bytes]) -> Response:
    if isinstance(result, dict):
        return JSONResponse(result)
    return EventStreamResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)


# -- threads ------------------------------------------------------------------------------------


@router.post("")
async def create_thread(
    services: ServicesDep, principal: PrincipalDep, body: CreateThreadRequest | None = None
) -> dict[str, Any]:
    return await services.threads.create(principal.project_id, body or CreateThreadRequest())


@router.post("/runs")
async def create_thread_and_run(
    body: CreateThreadAndRunRequest, services: ServicesDep, principal: PrincipalDep
) -> Response:
    return _reply(await services.runs.create_thread_and_run(principal.project_id, body))


@router.get("/{thread_id}")
async def retrieve_thread(
    thread_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.threads.retrieve(principal.project_id, thread_id)


@router.post("/{thread_id}")
async def modify_thread(
    thread_id: str, body: ModifyThreadRequest, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.threads.modify(principal.project_id, thread_id, body)


@router.delete("/{thread_id}")
async def delete_thread(
    thread_id: str, services: ServicesDep, principal: PrincipalDep
) -> DeleteThreadResponse:
    return await services.threads.delete(principal.project_id, thread_id)


# -- messages -----------------------------------------------------------------------------------


@router.post("/{thread_id}/messages")
async def create_message(
    thread_id: str, body: CreateMessageRequest, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.threads.create_message(principal.project_id, thread_id, body)


@router.get("/{thread_id}/messages")
async def list_messages(
    thread_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    page = await services.threads.list_messages(
        principal.project_id,
        thread_id,
        limit=limit,
        order=order,
        after=after,
        before=before,
        run_id=run_id,
    )
    return page.body()


@router.get("/{thread_id}/messages/{message_id}")
async def retrieve_message(
    thread_id: str, message_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.threads.retrieve_message(principal.project_id, thread_id, message_id)


@router.post("/{thread_id}/messages/{message_id}")
async def modify_message(
    thread_id: str,
    message_id: str,
    body: ModifyMessageRequest,
    services: ServicesDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    return await services.threads.modify_message(
        principal.project_id, thread_id, message_id, body.metadata
    )


@router.delete("/{thread_id}/messages/{message_id}")
async def delete_message(
    thread_id: str, message_id: str, services: ServicesDep, principal: PrincipalDep
) -> DeleteMessageResponse:
    return await services.threads.delete_message(principal.project_id, thread_id, message_id)


# -- runs ---------------------------------------------------------------------------------------


@router.post("/{thread_id}/runs")
async def create_run(
    thread_id: str, body: CreateRunRequest, services: ServicesDep, principal: PrincipalDep
) -> Response:
    return _reply(await services.runs.create(principal.project_id, thread_id, body))


@router.get("/{thread_id}/runs")
async def list_runs(
    thread_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    page = await services.runs.list(
        principal.project_id, thread_id, limit=limit, order=order, after=after, before=before
    )
    return page.body()


@router.get("/{thread_id}/runs/{run_id}")
async def retrieve_run(
    thread_id: str, run_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.runs.retrieve(principal.project_id, thread_id, run_id)


@router.post("/{thread_id}/runs/{run_id}")
async def modify_run(
    thread_id: str,
    run_id: str,
    body: ModifyRunRequest,
    services: ServicesDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    return await services.runs.modify(principal.project_id, thread_id, run_id, body.metadata)


@router.post("/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    thread_id: str, run_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.runs.cancel(principal.project_id, thread_id, run_id)


@router.post("/{thread_id}/runs/{run_id}/submit_tool_outputs")
async def submit_tool_outputs(
    thread_id: str,
    run_id: str,
    body: SubmitToolOutputsRunRequest,
    services: ServicesDep,
    principal: PrincipalDep,
) -> Response:
    result = await services.runs.submit_tool_outputs(principal.project_id, thread_id, run_id, body)
    return _reply(result)


@router.get("/{thread_id}/runs/{run_id}/steps")
async def list_run_steps(
    thread_id: str,
    run_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Limit = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    page = await services.runs.list_steps(
        principal.project_id,
        thread_id,
        run_id,
        limit=limit,
        order=order,
        after=after,
        before=before,
    )
    return page.body()


@router.get("/{thread_id}/runs/{run_id}/steps/{step_id}")
async def retrieve_run_step(
    thread_id: str, run_id: str, step_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await services.runs.retrieve_step(principal.project_id, thread_id, run_id, step_id)
