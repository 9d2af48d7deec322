"""Server-side tools end to end: ``mcp`` (SSRF checks, approvals) and ``file_search``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate
from scripted_upstream import call_text
from zorbia import zorbia_store

from .mcp_server import McpServer
from .test_responses import raw_stream, validate_stream


@pytest.fixture(scope="module")
def mcp() -> Iterator[tuple[McpServer, str]]:
    server = McpServer()
    with server.serve() as url:
        yield server, url


def mcp_tool(url: str, approval: Any = "never") -> dict[str, Any]:
    return {
        "type": "mcp",
        "server_label": "calc",
        "server_url": url,
        "allowed_tools": ["add"],
        "require_approval": approval,
    }


def get(server: RixinProcess, path: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(
        f"{server.api_url}{path}", headers=server.headers(), timeout=30
    ).json()
    return body


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/mcp",
        "http://169.254.169.254/latest",
        "http://[::1]:9/mcp",
        "http://0.0.0.0:9/mcp",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
    ],
)
def test_b8_mcp_urls_to_private_addresses_are_refused(client: openai.OpenAI, url: str) -> None:
    with pytest.raises((openai.PermissionDeniedError, openai.BadRequestError)):
        client.responses.create(model="fake-chat", input="x", tools=[mcp_tool(url)])


def test_mcp_call_without_approval(
    client: openai.OpenAI, agent_server: RixinProcess, upstream: Any, mcp: tuple[McpServer, str]
) -> None:
    server, url = mcp
    upstream.script = [call_text("add", a=2, b=3), "The sum is 5."]
    response = client.responses.create(model="fake-chat", input="2+3?", tools=[mcp_tool(url)])
    kinds = [item.type for item in response.output]
    assert kinds == ["mcp_list_tools", "mcp_call", "message"]
    listing = response.output[0]
    assert [t.name for t in listing.tools] == ["add"]  # type: ignore[union-attr]
    assert response.output[1].output == "5"  # type: ignore[union-attr]
    assert response.output_text == "The sum is 5."
    assert server.calls[-1] == {"name": "add", "arguments": {"a": 2, "b": 3}}
    validate("Response", get(agent_server, f"/responses/{response.id}"))


def test_a10_mcp_call_waits_for_approval(
    client: openai.OpenAI, agent_server: RixinProcess, upstream: Any, mcp: tuple[McpServer, str]
) -> None:
    server, url = mcp
    before = len(server.calls)
    upstream.script = [call_text("add", a=1, b=1), "It is 2."]
    first = client.responses.create(
        model="fake-chat", input="1+1?", tools=[mcp_tool(url, "always")]
    )
    request = first.output[-1]
    assert request.type == "mcp_approval_request"
    assert len(server.calls) == before  # nothing ran yet
    validate("Response", get(agent_server, f"/responses/{first.id}"))
    second = client.responses.create(
        model="fake-chat",
        previous_response_id=first.id,
        tools=[mcp_tool(url, "always")],
        input=[
            {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}
        ],
    )
    assert [item.type for item in second.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert len(server.calls) == before + 1
    assert second.output_text == "It is 2."


def test_file_search_over_a_vector_store(
    client: openai.OpenAI, agent_server: RixinProcess, upstream: Any
) -> None:
    store_id, file_id = zorbia_store(client)
    upstream.script = [call_text("file_search", query="capital of Zorbia"), "Quentaville."]
    response = client.responses.create(
        model="fake-chat",
        input="What is the capital of Zorbia?",
        tools=[{"type": "file_search", "vector_store_ids": [store_id]}],
        include=["file_search_call.results"],
    )
    call = response.output[0]
    assert call.type == "file_search_call"
    assert call.results and call.results[0].file_id == file_id
    assert "Quentaville" in str(upstream.bodies[-1]["messages"])
    validate("Response", get(agent_server, f"/responses/{response.id}"))


def test_a1_file_search_on_another_tenants_store_is_404(
    client: openai.OpenAI, other_tenant: openai.OpenAI
) -> None:
    store = client.vector_stores.create(name="private")
    with pytest.raises(openai.NotFoundError):
        other_tenant.responses.create(
            model="fake-chat",
            input="x",
            tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
        )


def test_code_interpreter_in_the_sandbox(
    client: openai.OpenAI, agent_server: RixinProcess, upstream: Any
) -> None:
    for _attempt in range(2):  # the sandbox's first spawn can fail (reported upstream)
        upstream.script = [call_text("code_interpreter", code="print(6 * 7)"), "It is 42."]
        response = client.responses.create(
            model="fake-chat",
            input="What is 6*7? Use Python.",
            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
            include=["code_interpreter_call.outputs"],
        )
        assert response.status == "completed", response.error
        call = response.output[0]
        assert call.type == "code_interpreter_call"
        if call.status == "completed":
            break
    assert call.outputs and "42" in call.outputs[0].logs  # type: ignore[union-attr]
    assert "42" in str(upstream.bodies[-1]["messages"])
    assert response.output_text == "It is 42."
    validate("Response", get(agent_server, f"/responses/{response.id}"))


def test_streamed_tool_calls_emit_their_progress_events(
    client: openai.OpenAI, agent_server: RixinProcess, upstream: Any
) -> None:
    """file_search_call.* and code_interpreter_call*.* events, each valid and in the spec's
    order, between the item's ``output_item.added`` and ``output_item.done``."""
    store = client.vector_stores.create(name="events")
    upstream.script = [
        call_text("file_search", query="anything"),
        call_text("code_interpreter", code="print(2 + 2)"),
        "Done.",
    ]
    events = raw_stream(
        agent_server,
        {
            "model": "fake-chat",
            "input": "Search, then compute.",
            "tools": [
                {"type": "file_search", "vector_store_ids": [store.id]},
                {"type": "code_interpreter", "container": {"type": "auto"}},
            ],
        },
    )
    validate_stream(events)
    kinds = [e["type"] for e in events]
    search = [k for k in kinds if k.startswith("response.file_search_call.")]
    assert search == [
        f"response.file_search_call.{s}" for s in ("in_progress", "searching", "completed")
    ]
    code = [k for k in kinds if k.startswith("response.code_interpreter_call")]
    assert code == [
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
    ]
    done = next(e for e in events if e["type"] == "response.code_interpreter_call_code.done")
    assert done["code"] == "print(2 + 2)"
    assert kinds[-1] == "response.completed"


def test_streamed_mcp_calls_emit_their_progress_events(
    agent_server: RixinProcess, upstream: Any, mcp: tuple[McpServer, str]
) -> None:
    _, url = mcp
    upstream.script = [call_text("add", a=2, b=3), "The sum is 5."]
    events = raw_stream(
        agent_server, {"model": "fake-chat", "input": "2+3?", "tools": [mcp_tool(url)]}
    )
    validate_stream(events)
    kinds = [e["type"] for e in events if ".mcp_" in e["type"]]
    assert kinds == [
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
    ]
