"""Remote MCP servers over streamable HTTP (``mcp`` tools).

Creating a response with an ``mcp`` tool lists the server's tools (an ``mcp_list_tools`` item)
and offers the allowed ones to the model. Calls go out as JSON-RPC ``tools/call``. Every remote
tool is treated as side-effecting (the engine never repeats one after a crash) and, as at
OpenAI, needs approval unless ``require_approval`` says ``never`` for it (A10).

SSRF (RELIABILITY B8): ``rixin.netguard.check_url`` with ``settings.agents.mcp_allowed_hosts``
(public addresses only unless allowlisted; plain ``http`` pinned to the validated address);
redirects are never followed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from rixin import __version__, netguard
from rixin.agents.tools.base import (
    BaseTool,
    BuildContext,
    JSONDict,
    ToolBundle,
    ToolCall,
    ToolContext,
    ToolError,
    ToolOutput,
)
from rixin.errors import InvalidRequest
from rixin.store.ids import new_id

PROTOCOL_VERSION = "2025-06-18"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_OUTPUT_CHARS = 50_000


class McpError(ToolError):
    code = "mcp_error"


# -- SSRF ----------------------------------------------------------------------------------


async def check_url(url: str, allowed_hosts: list[str]) -> tuple[str, str]:
    """``(url to connect to, Host header)`` for a permitted server URL; 403 otherwise."""
    return await netguard.check_url(url, allowed_hosts, param="tools.server_url", name="server_url")


# -- client --------------------------------------------------------------------------------


@dataclass
class McpClient:
    """A minimal streamable-HTTP MCP client: initialize, tools/list, tools/call."""

    url: str
    host: str
    headers: dict[str, str]
    timeout_s: float
    session_id: str | None = None
    _next_id: int = 0

    async def _post(self, client: httpx.AsyncClient, payload: JSONDict) -> JSONDict | None:
        headers = {
            **self.headers,
            "Host": self.host,
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": PROTOCOL_VERSION,
        }
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        try:
            response = await client.post(self.url, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise McpError(f"The MCP server could not be reached ({type(exc).__name__}).") from exc
        if response.status_code >= 400:
            raise McpError(f"The MCP server answered HTTP {response.status_code}.")
        self.session_id = response.headers.get("mcp-session-id", self.session_id)
        if "id" not in payload or response.status_code == 202:
            return None
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise McpError("The MCP server's answer is too large.")
        return _rpc_result(response, payload["id"])

    async def request(self, client: httpx.AsyncClient, method: str, params: JSONDict) -> JSONDict:
        self._next_id += 1
        payload = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}
        result = await self._post(client, payload)
        return result or {}

    async def open(self, client: httpx.AsyncClient) -> None:
        await self.request(
            client,
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "rixin", "version": __version__},
            },
        )
        await self._post(client, {"jsonrpc": "2.0", "method": "notifications/initialized"})

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False)


def _rpc_result(response: httpx.Response, request_id: Any) -> JSONDict:
    messages: list[Any] = []
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                try:
                    messages.append(json.loads(line[5:].strip()))
                except ValueError:
                    continue
    else:
        try:
            messages.append(response.json())
        except ValueError as exc:
            raise McpError("The MCP server's answer is not JSON.") from exc
    for message in messages:
        if isinstance(message, dict) and message.get("id") == request_id:
            if isinstance(message.get("error"), dict):
                error = message["error"]
                raise McpError(f"MCP error {error.get('code')}: {error.get('message')}")
            result = message.get("result")
            return result if isinstance(result, dict) else {}
    raise McpError("The MCP server sent no answer to the request.")


# -- tools ---------------------------------------------------------------------------------


@dataclass
class McpTool(BaseTool):
    server_label: str = ""
    remote_name: str = ""
    client: McpClient | None = None
    side_effects: bool = True

    def call_item(self, call: ToolCall, item_id: str, status: str) -> JSONDict:
        return {
            "id": item_id,
            "type": "mcp_call",
            "status": status,
            "server_label": self.server_label,
            "name": self.remote_name,
            "arguments": call.arguments,
            "output": None,
            "error": None,
        }

    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolOutput:
        assert self.client is not None
        arguments = call.parsed()
        try:
            async with self.client.http() as http:
                await self.client.open(http)
                result = await self.client.request(
                    http, "tools/call", {"name": self.remote_name, "arguments": arguments}
                )
        except McpError as exc:
            return ToolOutput(exc.message, {"error": {"message": exc.message}}, failed=True)
        text = "".join(
            str(part.get("text", ""))
            for part in result.get("content") or []
            if isinstance(part, dict) and part.get("type") == "text"
        )[:MAX_OUTPUT_CHARS]
        if result.get("isError"):
            return ToolOutput(text, {"error": {"message": text}}, failed=True)
        return ToolOutput(text, {"output": text})


def _names(value: Any) -> set[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return {str(v) for v in value}
    if isinstance(value, dict):
        names = value.get("tool_names")
        return {str(v) for v in names} if isinstance(names, list) else set()
    raise InvalidRequest("allowed_tools must be a list of names.", param="tools.allowed_tools")


def _needs_approval(policy: Any, name: str) -> bool:
    if policy in (None, "always"):
        return True
    if policy == "never":
        return False
    if isinstance(policy, dict):
        never = _names(policy.get("never")) or set()
        always = _names(policy.get("always")) or set()
        if name in always:
            return True
        return name not in never
    raise InvalidRequest("require_approval must be 'always', 'never' or a filter.", param="tools")


async def build(spec: JSONDict, ctx: BuildContext) -> ToolBundle:
    label = spec.get("server_label")
    server_url = spec.get("server_url")
    if not isinstance(label, str) or not label:
        raise InvalidRequest("An mcp tool needs a 'server_label'.", param="tools.server_label")
    if not isinstance(server_url, str):
        raise InvalidRequest("An mcp tool needs a 'server_url'.", param="tools.server_url")
    settings = ctx.settings
    url, host = await check_url(server_url, list(settings.mcp_allowed_hosts))
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    if spec.get("authorization"):
        headers["Authorization"] = f"Bearer {spec['authorization']}"
    client = McpClient(url=url, host=host, headers=headers, timeout_s=settings.mcp_timeout_s)
    try:
        async with client.http() as http:
            await client.open(http)
            listed = await client.request(http, "tools/list", {})
    except McpError as exc:
        raise InvalidRequest(
            f"Could not list the tools of MCP server {label!r}: {exc.message}",
            param="tools.server_url",
        ) from exc
    allowed = _names(spec.get("allowed_tools"))
    remote = [
        t
        for t in listed.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]
    if allowed is not None:
        remote = [t for t in remote if t["name"] in allowed]
    tools: list[McpTool] = []
    for entry in remote:
        schema = entry.get("inputSchema")
        tools.append(
            McpTool(
                name=entry["name"][:64],
                type="mcp",
                description=str(entry.get("description") or ""),
                parameters=schema if isinstance(schema, dict) else {"type": "object"},
                requires_approval=_needs_approval(spec.get("require_approval"), entry["name"]),
                server_label=label,
                remote_name=entry["name"],
                client=client,
            )
        )
    listing = _list_item(label, remote)
    return ToolBundle(tools=list(tools), preamble=[listing])


def _list_item(label: str, remote: list[JSONDict]) -> JSONDict:
    return {
        "id": new_id("mcpl"),
        "type": "mcp_list_tools",
        "server_label": label,
        "tools": [
            {
                "name": t["name"],
                "description": t.get("description"),
                "input_schema": t.get("inputSchema") or {"type": "object"},
                "annotations": t.get("annotations"),
            }
            for t in remote
        ],
        "error": None,
    }


__all__ = ["McpClient", "McpTool", "build", "check_url"]
