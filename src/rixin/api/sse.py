"""Turn a service ``Reply`` into a JSON response or an SSE stream."""

from __future__ import annotations

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from rixin.services.reply import Reply

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def respond(reply: Reply) -> Response:
    headers = {"x-rixin-replica": reply.replica}
    if isinstance(reply.content, dict):
        return JSONResponse(reply.content, headers=headers)
    return StreamingResponse(
        reply.content, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
    )
