"""Assistants v2: ``file_citation`` annotations on answers written from ``file_search`` results,
and ``thread.run.step.delta`` for streamed tool-call steps, validated against OpenAI's spec."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate
from scripted_upstream import ScriptedUpstream, call_text
from zorbia import zorbia_store

from .conftest import beta_client
from .test_assistants_api import WEATHER, get, make_assistant, sse_events

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def store(assistants_server: RixinProcess) -> tuple[str, str]:
    return zorbia_store(beta_client(assistants_server), "cite")


def test_streamed_file_search_step_and_cited_answer(
    client: openai.OpenAI,
    assistants_server: RixinProcess,
    upstream: ScriptedUpstream,
    store: tuple[str, str],
) -> None:
    store_id, file_id = store
    upstream.script = [call_text("file_search", query="capital of Zorbia"), "Quentaville [1]."]
    assistant = make_assistant(
        client,
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store_id]}},
    )
    events = sse_events(
        assistants_server,
        "/threads/runs",
        {
            "assistant_id": assistant.id,
            "thread": {"messages": [{"role": "user", "content": "Capital of Zorbia?"}]},
            "stream": True,
        },
    )
    for event in events:
        validate("AssistantStreamEvent", event)
    names = [e["event"] for e in events]
    tool_events = names[names.index("thread.run.in_progress") + 1 :][:4]
    assert tool_events == [
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
        "thread.run.step.completed",
    ]
    delta = next(e["data"] for e in events if e["event"] == "thread.run.step.delta")
    assert delta["delta"]["step_details"]["tool_calls"][0]["type"] == "file_search"
    assert names[-2:] == ["thread.run.completed", "done"]

    text = "Quentaville [1]."
    expected = {
        "type": "file_citation",
        "text": "[1]",
        "start_index": text.index("[1]"),
        "end_index": text.index("[1]") + 3,
        "file_citation": {"file_id": file_id},
    }
    completed = next(e["data"] for e in events if e["event"] == "thread.message.completed")
    assert completed["content"][0]["text"] == {"value": text, "annotations": [expected]}

    thread_id = events[0]["data"]["id"]
    listing = get(assistants_server, f"/threads/{thread_id}/messages")
    validate("ListMessagesResponse", listing)
    assert listing["data"][0]["content"][0]["text"]["annotations"] == [expected]
    message = client.beta.threads.messages.list(thread_id).data[0]
    note = message.content[0].text.annotations[0]  # type: ignore[union-attr]
    assert note.type == "file_citation" and note.file_citation.file_id == file_id


def test_function_call_step_delta_accumulates_in_the_official_helper(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    upstream.script = [call_text("get_weather", city="Rome")]
    assistant = make_assistant(client, tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Rome?"}])
    events: list[Any] = sse_events(
        assistants_server,
        f"/threads/{thread.id}/runs",
        {"assistant_id": assistant.id, "stream": True},
    )
    for event in events:
        validate("AssistantStreamEvent", event)
    names = [e["event"] for e in events]
    assert names[-5:] == [
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
        "thread.run.requires_action",
        "done",
    ]
    run_id = events[0]["data"]["id"]
    client.beta.threads.runs.cancel(run_id=run_id, thread_id=thread.id)

    upstream.script = [call_text("get_weather", city="Oslo")]
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        stream.until_done()
        steps = stream.get_final_run_steps()
    call = steps[-1].step_details.tool_calls[0]  # type: ignore[union-attr]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Oslo"}'
