"""``/v1/responses`` end to end with the official client, on a scripted fake upstream.

Every body is validated against OpenAI's spec (``Response``, each stream event's schema,
``ResponseItemList``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate
from scripted_upstream import ScriptedUpstream, call_text

EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.output_text.annotation.added": "ResponseOutputTextAnnotationAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.failed": "ResponseFailedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "error": "ResponseErrorEvent",
    "response.file_search_call.in_progress": "ResponseFileSearchCallInProgressEvent",
    "response.file_search_call.searching": "ResponseFileSearchCallSearchingEvent",
    "response.file_search_call.completed": "ResponseFileSearchCallCompletedEvent",
    "response.code_interpreter_call.in_progress": "ResponseCodeInterpreterCallInProgressEvent",
    "response.code_interpreter_call_code.delta": "ResponseCodeInterpreterCallCodeDeltaEvent",
    "response.code_interpreter_call_code.done": "ResponseCodeInterpreterCallCodeDoneEvent",
    "response.code_interpreter_call.interpreting": "ResponseCodeInterpreterCallInterpretingEvent",
    "response.code_interpreter_call.completed": "ResponseCodeInterpreterCallCompletedEvent",
    "response.mcp_list_tools.in_progress": "ResponseMCPListToolsInProgressEvent",
    "response.mcp_list_tools.completed": "ResponseMCPListToolsCompletedEvent",
    "response.mcp_list_tools.failed": "ResponseMCPListToolsFailedEvent",
    "response.mcp_call.in_progress": "ResponseMCPCallInProgressEvent",
    "response.mcp_call_arguments.delta": "ResponseMCPCallArgumentsDeltaEvent",
    "response.mcp_call_arguments.done": "ResponseMCPCallArgumentsDoneEvent",
    "response.mcp_call.completed": "ResponseMCPCallCompletedEvent",
    "response.mcp_call.failed": "ResponseMCPCallFailedEvent",
}

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def raw(server: RixinProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, f"{server.api_url}{path}", headers=server.headers(), timeout=30, **kw
    )


def raw_stream(server: RixinProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's events exactly as sent (``event:`` name equals ``data.type``)."""
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST",
        f"{server.api_url}/responses",
        json={**body, "stream": True},
        headers=server.headers(),
        timeout=30,
    ) as response:
        assert response.status_code == 200
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["type"] == name
                events.append(event)
    return events


def validate_stream(events: list[dict[str, Any]]) -> None:
    """Each event matches its schema; sequence numbers count from 0; the order is the spec's."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        validate(EVENT_SCHEMAS[event["type"]], event)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.failed", "response.incomplete")
    open_items: set[int] = set()
    for event in events:
        if event["type"] == "response.output_item.added":
            open_items.add(event["output_index"])
        elif event["type"] == "response.output_item.done":
            open_items.discard(event["output_index"])
        elif "output_index" in event:
            assert event["output_index"] in open_items, event["type"]
    assert not open_items


def test_basic_response(client: openai.OpenAI, agent_server: RixinProcess, upstream: Any) -> None:
    upstream.script = ["Bonjour tout le monde."]
    response = client.responses.create(
        model="fake-chat", input="Say hello in French.", instructions="Be brief."
    )
    assert response.status == "completed"
    assert response.output_text == "Bonjour tout le monde."
    assert response.usage is not None and response.usage.output_tokens > 0
    body = raw(agent_server, "GET", f"/responses/{response.id}").json()
    validate("Response", body)
    sent = upstream.bodies[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1] == {"role": "user", "content": "Say hello in French."}
    items = raw(agent_server, "GET", f"/responses/{response.id}/input_items").json()
    validate("ResponseItemList", items)
    assert items["data"][0]["content"][0]["text"] == "Say hello in French."


def test_stream_events_in_spec_order(
    client: openai.OpenAI, agent_server: RixinProcess, upstream: Any
) -> None:
    upstream.script = ["one two three four", "five six"]
    events = raw_stream(agent_server, {"model": "fake-chat", "input": "count"})
    validate_stream(events)
    with client.responses.create(model="fake-chat", input="more", stream=True) as stream:
        kinds = [event.type for event in stream]
    assert kinds[-1] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "one two three four"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == deltas


def test_previous_response_id_carries_history(client: openai.OpenAI, upstream: Any) -> None:
    upstream.script = ["Nice to meet you, Ada.", "Your name is Ada."]
    first = client.responses.create(model="fake-chat", input="My name is Ada.")
    second = client.responses.create(
        model="fake-chat", input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    messages = upstream.bodies[-1]["messages"]
    assert [m["content"] for m in messages] == [
        "My name is Ada.",
        "Nice to meet you, Ada.",
        "What is my name?",
    ]


def test_function_tool_round_trip(client: openai.OpenAI, upstream: Any) -> None:
    upstream.script = [call_text("get_weather", city="Paris"), "It is sunny in Paris."]
    first = client.responses.create(model="fake-chat", input="Weather in Paris?", tools=[WEATHER])
    assert first.status == "completed"
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and json.loads(calls[0].arguments) == {"city": "Paris"}
    second = client.responses.create(
        model="fake-chat",
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"sky":"sun"}'}
        ],
    )
    assert second.output_text == "It is sunny in Paris."
    sent = json.dumps(upstream.bodies[-1]["messages"])
    assert "sun" in sent


def test_function_call_stream_events(agent_server: RixinProcess, upstream: Any) -> None:
    upstream.script = [call_text("get_weather", city="Rome")]
    body = {"model": "fake-chat", "input": "Weather in Rome?", "tools": [WEATHER]}
    events = raw_stream(agent_server, body)
    validate_stream(events)
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done and json.loads(done[0]["arguments"]) == {"city": "Rome"}


def test_json_schema_text_format_reaches_the_model(client: openai.OpenAI, upstream: Any) -> None:
    upstream.script = ['{"answer": 4}']
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    response = client.responses.create(
        model="fake-chat",
        input="2+2?",
        text={"format": {"type": "json_schema", "name": "math", "schema": schema}},
    )
    assert json.loads(response.output_text) == {"answer": 4}
    assert upstream.bodies[-1]["response_format"]["json_schema"]["schema"] == schema


def test_max_output_tokens_makes_it_incomplete(
    client: openai.OpenAI, agent_server: RixinProcess, upstream: Any
) -> None:
    upstream.script = ["a b c d e f g h"]
    response = client.responses.create(model="fake-chat", input="go", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    validate("Response", raw(agent_server, "GET", f"/responses/{response.id}").json())


def test_tool_loop_is_bounded(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    """A model that calls a tool forever stops at max_tool_calls (incomplete)."""
    upstream.behaviour.reply = call_text("code_interpreter", code="print(1)")
    response = client.responses.create(
        model="fake-chat",
        input="loop",
        tools=[{"type": "function", "name": "noop", "parameters": {"type": "object"}}],
        max_tool_calls=0,
    )
    assert response.status in ("incomplete", "completed")


def test_delete_and_missing(client: openai.OpenAI, upstream: Any) -> None:
    response = client.responses.create(model="fake-chat", input="hi")
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="fake-chat", input="x", previous_response_id=response.id)


def test_bad_requests_are_400_with_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="fake-chat", input=[{"type": "bogus"}])
    assert info.value.body["param"] == "input[0]"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="fake-chat", input="x", tools=[{"type": "nope"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")


def test_background_response_completes(client: openai.OpenAI, upstream: Any) -> None:
    upstream.script = ["done in the background"]
    response = client.responses.create(model="fake-chat", input="bg", background=True)
    assert response.status == "queued"
    deadline = time.monotonic() + 20
    while response.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        response = client.responses.retrieve(response.id)
    assert response.status == "completed"
    assert response.output_text == "done in the background"


def test_cancel_background_response(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.behaviour.tokens_per_s = 2
    upstream.behaviour.reply = "slow " * 40
    response = client.responses.create(model="fake-chat", input="slow", background=True)
    time.sleep(1.0)
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    assert upstream.stats.wait_cancelled(timeout=3.0)
