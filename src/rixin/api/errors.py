"""Render every error as OpenAI's envelope, FastAPI's own validation errors included."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rixin.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    RequestTooLarge,
    RixinError,
)

log = logging.getLogger("rixin.api")

_HTTP_ERRORS: dict[int, type[RixinError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    404: NotFound,
    413: RequestTooLarge,
}


def error_response(exc: RixinError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]  # only the first element names the location; a field may be "query"
    # pydantic unions add the member type to the location; keep only field names and indices
    cleaned = [p for p in parts if not (p[:1].isupper() or "[" in p or p.startswith("function-"))]
    if not cleaned:
        return None
    text = cleaned[0]
    for part in cleaned[1:]:
        text += f"[{part}]" if part.isdigit() else f".{part}"
    return text


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "Invalid request"}
    param = _param(tuple(first.get("loc", ())))
    message = str(first.get("msg", "Invalid request"))
    if first.get("type") == "json_invalid" or param is None and "JSON" in message:
        return InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        )
    if param is None:  # the body as a whole is wrong (an array, a string …), not one field
        return InvalidRequest(f"Invalid request body: {message}.")
    if first.get("type") == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    return InvalidRequest(f"Invalid value for '{param}': {message}.", param=param)


def install(app: FastAPI) -> None:
    async def on_rixin_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RixinError)
        if exc.status_code >= 500:
            log.warning("request failed: %s", exc.message, extra={"code": exc.code})
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        cls = _HTTP_ERRORS.get(exc.status_code)
        if cls is None:
            err = RixinError(str(exc.detail), code=None)
            err.status_code = exc.status_code
            err.error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        elif exc.status_code == 404:
            err = NotFound(f"Unknown request URL: {request.method} {request.url.path}.")
        elif exc.status_code == 400:
            err = InvalidRequest(
                "We could not parse the body of your request.", code="invalid_body"
            )
        else:
            err = cls(str(exc.detail))
        err.headers.update(exc.headers or {})
        return error_response(err)

    app.add_exception_handler(RixinError, on_rixin_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
