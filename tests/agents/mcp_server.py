"""A tiny MCP server over streamable HTTP (JSON answers) for tests, on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOOLS = [
    {
        "name": "add",
        "description": "Add two integers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
    {"name": "hidden", "description": "Not allowed.", "inputSchema": {"type": "object"}},
]


class McpServer:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/mcp", self._rpc, methods=["POST"])])

    async def _rpc(self, request: Request) -> Response:
        message = await request.json()
        if "id" not in message:
            return Response(status_code=202)
        method = message.get("method")
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "test", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": TOOLS}
        elif method == "tools/call":
            params = message["params"]
            self.calls.append(params)
            args = params.get("arguments") or {}
            text = str(int(args.get("a", 0)) + int(args.get("b", 0)))
            result = {"content": [{"type": "text", "text": text}], "isError": False}
        else:
            return JSONResponse(
                {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "?"}}
            )
        headers = {"Mcp-Session-Id": "session-1"}
        return JSONResponse(
            {"jsonrpc": "2.0", "id": message["id"], "result": result}, headers=headers
        )

    @contextmanager
    def serve(self) -> Iterator[str]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True
            thread.join(timeout=5)
            sock.close()
