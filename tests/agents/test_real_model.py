"""The headline flows on the packaged 0.5B model (``real_server``), with the official client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from conftest import CHAT_MODEL
from harness import RixinProcess
from openapi_spec import validate

from .test_responses import EVENT_SCHEMAS, WEATHER

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def real(real_server: RixinProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=real_server.api_url, api_key=real_server.admin_key)


def get(server: RixinProcess, path: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(
        f"{server.api_url}{path}", headers=server.headers(), timeout=60
    ).json()
    return body


def test_real_basic_and_previous_response(real: openai.OpenAI, real_server: RixinProcess) -> None:
    first = real.responses.create(
        model=CHAT_MODEL,
        input="My name is Ada. Reply with one short sentence.",
        max_output_tokens=24,
        temperature=0,
    )
    assert first.status in ("completed", "incomplete")
    assert first.output_text.strip()
    validate("Response", get(real_server, f"/responses/{first.id}"))
    second = real.responses.create(
        model=CHAT_MODEL,
        input="What is my name? Answer with the name only.",
        previous_response_id=first.id,
        max_output_tokens=8,
        temperature=0,
    )
    assert "Ada" in second.output_text


def test_real_stream_events_validate(real_server: RixinProcess) -> None:
    events: list[dict[str, Any]] = []
    body = {"model": CHAT_MODEL, "input": "Say hi.", "max_output_tokens": 12, "stream": True}
    with httpx.stream(
        "POST",
        f"{real_server.api_url}/responses",
        json=body,
        headers=real_server.headers(),
        timeout=120,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        validate(EVENT_SCHEMAS[event["type"]], event)
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    assert any(e["type"] == "response.output_text.delta" for e in events)


def test_real_function_tool_round_trip(real: openai.OpenAI) -> None:
    first = real.responses.create(
        model=CHAT_MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=64,
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    second = real.responses.create(
        model=CHAT_MODEL,
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[
            {
                "type": "function_call_output",
                "call_id": calls[0].call_id,
                "output": '{"temperature_c": 21, "sky": "sunny"}',
            }
        ],
        max_output_tokens=40,
        temperature=0,
    )
    assert second.status in ("completed", "incomplete")
    assert second.output_text.strip()


def test_real_conversation(real: openai.OpenAI) -> None:
    conv = real.conversations.create()
    real.responses.create(
        model=CHAT_MODEL,
        input="Remember the number 42.",
        conversation=conv.id,
        max_output_tokens=16,
        temperature=0,
    )
    items = list(real.conversations.items.list(conv.id, order="asc"))
    assert items[0].type == "message" and items[0].role == "user"  # type: ignore[union-attr]
    assert items[-1].role == "assistant"  # type: ignore[union-attr]
