"""The Assistants headline flow on the packaged 0.5B model (``real_server``), official client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from conftest import CHAT_MODEL
from harness import RixinProcess
from openapi_spec import validate

pytestmark = [pytest.mark.model, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def get(server: RixinProcess, path: str) -> Any:
    return httpx.get(f"{server.api_url}{path}", headers=server.headers(), timeout=60).json()


def test_real_run_tool_round_trip(real_server: RixinProcess) -> None:
    client = openai.OpenAI(base_url=real_server.api_url, api_key=real_server.admin_key)
    assistant = client.beta.assistants.create(
        model=CHAT_MODEL,
        instructions="You are terse. Answer in one short sentence.",
        tools=[WEATHER],
        temperature=0,
    )
    validate("AssistantObject", get(real_server, f"/assistants/{assistant.id}"))
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Say hello in one word."}]
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        tool_choice="none",
        max_completion_tokens=256,
        poll_interval_ms=200,
    )
    assert run.status in ("completed", "incomplete"), run.last_error
    validate("RunObject", get(real_server, f"/threads/{thread.id}/runs/{run.id}"))
    messages = get(real_server, f"/threads/{thread.id}/messages")
    validate("ListMessagesResponse", messages)
    assert messages["data"][0]["role"] == "assistant"
    assert messages["data"][0]["content"][0]["text"]["value"].strip()

    client.beta.threads.messages.create(thread.id, role="user", content="Weather in Paris?")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_completion_tokens=256,
        poll_interval_ms=200,
    )
    assert run.status == "requires_action", run.last_error
    assert run.required_action is not None
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "Sunny, 25 C"}],
        poll_interval_ms=200,
    )
    assert done.status in ("completed", "incomplete", "requires_action"), done.last_error
    body = get(real_server, f"/threads/{thread.id}/runs/{run.id}")
    validate("RunObject", body)
    steps = get(real_server, f"/threads/{thread.id}/runs/{run.id}/steps?order=asc")
    validate("ListRunStepsResponse", steps)
    assert steps["data"][0]["type"] == "tool_calls"
    assert steps["data"][0]["step_details"]["tool_calls"][0]["function"]["output"] == "Sunny, 25 C"
    if done.status == "completed":
        assert steps["data"][-1]["type"] == "message_creation"
