"""``POST /v1/dify/retrieval``: Dify's External Knowledge API over the caller's vector stores.

In Dify, set the external knowledge API endpoint to ``http://<rixin>/v1/dify``, the API key to a
rixin project key and the external knowledge ID to a vector store id.

Errors on this route carry Dify's ``error_code``/``error_msg`` (1001: the Authorization header
is missing or not ``Bearer <key>``; 1002: the key is refused; 2001: no such knowledge; otherwise
the HTTP status) next to OpenAI's ``error`` envelope, which every rixin route keeps; the HTTP
status is rixin's (401 for authentication), which Dify only checks for being 200.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from rixin.api.deps import PrincipalDep
from rixin.api.errors import validation_error
from rixin.api.vector_stores import StoresDep
from rixin.errors import AuthenticationFailed, NotFound, RixinError
from rixin.schemas.dify import RetrievalRequest, RetrievalResponse
from rixin.services import dify

log = logging.getLogger("rixin.api")

MALFORMED_HEADER, AUTHORIZATION_FAILED, UNKNOWN_KNOWLEDGE = 1001, 1002, 2001


class DifyRoute(APIRoute):
    """Renders this router's errors with Dify's fields added (dependencies' included)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RixinError as exc:
                return dify_error(request, exc)
            except RequestValidationError as exc:
                return dify_error(request, validation_error(exc))

        return route


router = APIRouter(prefix="/v1/dify", tags=["dify"], route_class=DifyRoute)


@router.post("/retrieval")
async def retrieval(
    body: RetrievalRequest, stores: StoresDep, principal: PrincipalDep
) -> RetrievalResponse:
    return await dify.retrieve(stores, principal.project_id, body)


def dify_error(request: Request, exc: RixinError) -> JSONResponse:
    if exc.status_code >= 500:
        log.warning("request failed: %s", exc.message, extra={"code": exc.code})
    body = {"error_code": error_code(request, exc), "error_msg": exc.message, **exc.body()}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def error_code(request: Request, exc: RixinError) -> int:
    if isinstance(exc, AuthenticationFailed):
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        well_formed = scheme.lower() == "bearer" and bool(token.strip())
        return AUTHORIZATION_FAILED if well_formed else MALFORMED_HEADER
    if isinstance(exc, NotFound):
        return UNKNOWN_KNOWLEDGE
    return exc.status_code
