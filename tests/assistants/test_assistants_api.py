"""Assistants v2 end to end with the official client, on a scripted fake upstream.

Every body is validated against OpenAI's spec (``AssistantObject``, ``ThreadObject``,
``MessageObject``, ``RunObject``, ``RunStepObject``, the list responses and
``AssistantStreamEvent`` for each streamed event).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate, validate_error
from scripted_upstream import ScriptedUpstream, call_text

from .conftest import beta_client, member_key, raw

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

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


def make_assistant(client: openai.OpenAI, **kw: Any) -> Any:
    return client.beta.assistants.create(
        model="fake-chat", name="helper", instructions="Be brief.", **kw
    )


def get(server: RixinProcess, path: str) -> Any:
    response = raw(server, "GET", path)
    assert response.status_code == 200, response.text
    return response.json()


def test_assistant_crud(client: openai.OpenAI, assistants_server: RixinProcess) -> None:
    first = make_assistant(client, tools=[WEATHER], metadata={"team": "a"})
    second = make_assistant(client)
    body = get(assistants_server, f"/assistants/{first.id}")
    validate("AssistantObject", body)
    assert body["tools"][0]["function"]["name"] == "get_weather"
    changed = client.beta.assistants.update(first.id, name="renamed", metadata={"team": "b"})
    assert changed.name == "renamed" and changed.metadata == {"team": "b"}
    assert changed.tools[0].type == "function"  # untouched fields stay
    listing = get(assistants_server, "/assistants?limit=2&order=desc")
    validate("ListAssistantsResponse", listing)
    assert [a["id"] for a in listing["data"]] == [second.id, first.id]
    after = get(assistants_server, f"/assistants?limit=1&order=desc&after={second.id}")
    assert after["data"][0]["id"] == first.id
    deleted = client.beta.assistants.delete(second.id)
    assert deleted.deleted is True
    validate("DeleteAssistantResponse", deleted.model_dump())
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(second.id)
    with pytest.raises(openai.BadRequestError):
        client.beta.assistants.create(model="fake-chat", tools=[{"type": "bogus"}])  # type: ignore[list-item]
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.create(model="no-such-model")


def test_thread_and_message_crud(client: openai.OpenAI, assistants_server: RixinProcess) -> None:
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "hello"}], metadata={"k": "v"}
    )
    validate("ThreadObject", get(assistants_server, f"/threads/{thread.id}"))
    message = client.beta.threads.messages.create(
        thread.id, role="user", content=[{"type": "text", "text": "second"}]
    )
    validate("MessageObject", get(assistants_server, f"/threads/{thread.id}/messages/{message.id}"))
    listing = get(assistants_server, f"/threads/{thread.id}/messages?order=asc")
    validate("ListMessagesResponse", listing)
    texts = [m["content"][0]["text"]["value"] for m in listing["data"]]
    assert texts == ["hello", "second"]
    updated = client.beta.threads.messages.update(
        message.id, thread_id=thread.id, metadata={"x": "1"}
    )
    assert updated.metadata == {"x": "1"}
    client.beta.threads.update(thread.id, metadata={"k": "w"})
    assert client.beta.threads.retrieve(thread.id).metadata == {"k": "w"}
    gone = client.beta.threads.messages.delete(message.id, thread_id=thread.id)
    validate("DeleteMessageResponse", gone.model_dump())
    assert client.beta.threads.delete(thread.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)


def test_create_and_poll_completes(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    upstream.script = ["Bonjour tout le monde."]
    assistant = make_assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Say hi in French"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        additional_instructions="Use French.",
        poll_interval_ms=100,
    )
    assert run.status == "completed", run.last_error
    body = get(assistants_server, f"/threads/{thread.id}/runs/{run.id}")
    validate("RunObject", body)
    assert body["usage"]["completion_tokens"] > 0
    sent = upstream.bodies[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief.\n\nUse French."}
    assert sent[-1] == {"role": "user", "content": "Say hi in French"}
    messages = get(assistants_server, f"/threads/{thread.id}/messages")
    validate("ListMessagesResponse", messages)
    reply = messages["data"][0]
    assert reply["role"] == "assistant" and reply["run_id"] == run.id
    assert reply["content"][0]["text"]["value"] == "Bonjour tout le monde."
    steps = get(assistants_server, f"/threads/{thread.id}/runs/{run.id}/steps")
    validate("ListRunStepsResponse", steps)
    assert [s["type"] for s in steps["data"]] == ["message_creation"]
    assert steps["data"][0]["step_details"]["message_creation"]["message_id"] == reply["id"]
    runs = get(assistants_server, f"/threads/{thread.id}/runs")
    validate("ListRunsResponse", runs)
    modified = client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"a": "b"})
    assert modified.metadata == {"a": "b"}


def test_requires_action_then_submit_tool_outputs(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    upstream.script = [call_text("get_weather", city="Paris"), "It is sunny in Paris."]
    assistant = make_assistant(client, tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather in Paris?"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
    )
    assert run.status == "requires_action"
    validate("RunObject", get(assistants_server, f"/threads/{thread.id}/runs/{run.id}"))
    assert run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert len(calls) == 1 and json.loads(calls[0].function.arguments) == {"city": "Paris"}
    with pytest.raises(openai.BadRequestError):  # a thread with an active run takes no messages
        client.beta.threads.messages.create(thread.id, role="user", content="more")
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "nope", "output": "x"}]
        )
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": calls[0].id, "output": '{"sky": "sun"}'}],
        poll_interval_ms=100,
    )
    assert done.status == "completed", done.last_error
    assert "sun" in json.dumps(upstream.bodies[-1]["messages"])
    steps = get(assistants_server, f"/threads/{thread.id}/runs/{run.id}/steps?order=asc")
    validate("ListRunStepsResponse", steps)
    kinds = [s["type"] for s in steps["data"]]
    assert kinds == ["tool_calls", "message_creation"]
    tool_step = steps["data"][0]
    assert tool_step["status"] == "completed"
    assert tool_step["step_details"]["tool_calls"][0]["function"]["output"] == '{"sky": "sun"}'
    one = get(assistants_server, f"/threads/{thread.id}/runs/{run.id}/steps/{tool_step['id']}")
    validate("RunStepObject", one)
    listed = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id)
    assert len(listed.data) == 2
    texts = [
        m.content[0].text.value  # type: ignore[union-attr]
        for m in client.beta.threads.messages.list(thread.id, order="asc").data
    ]
    assert texts == ["Weather in Paris?", "It is sunny in Paris."]


def sse_events(server: RixinProcess, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", f"{server.api_url}{path}", json=body, headers=server.headers(), timeout=30
    ) as response:
        assert response.status_code == 200
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
                events.append(
                    {"event": name, "data": data if data == "[DONE]" else json.loads(data)}
                )
    return events


def test_stream_events_follow_the_spec(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    upstream.script = ["one two three"]
    assistant = make_assistant(client)
    events = sse_events(
        assistants_server,
        "/threads/runs",
        {
            "assistant_id": assistant.id,
            "thread": {"messages": [{"role": "user", "content": "count"}]},
            "stream": True,
        },
    )
    for event in events:
        validate("AssistantStreamEvent", event)
    names = [e["event"] for e in events]
    assert names == [
        "thread.created",
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.message.created",
        "thread.message.in_progress",
        *["thread.message.delta"] * (names.count("thread.message.delta")),
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
        "done",
    ]
    deltas = "".join(
        e["data"]["delta"]["content"][0]["text"]["value"]
        for e in events
        if e["event"] == "thread.message.delta"
    )
    assert deltas == "one two three"
    thread_id = events[0]["data"]["id"]
    step_id = events[4]["data"]["id"]
    run_id = events[1]["data"]["id"]
    steps = get(assistants_server, f"/threads/{thread_id}/runs/{run_id}/steps")
    assert [s["id"] for s in steps["data"]] == [step_id]


def test_stream_with_the_official_helper(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    upstream.script = [call_text("get_weather", city="Rome"), "Rome is warm."]
    assistant = make_assistant(client, tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Rome?"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        kinds = [event.event for event in stream]
        run = stream.get_final_run()
    assert kinds[-1] == "thread.run.requires_action"
    assert run.required_action is not None
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    with client.beta.threads.runs.submit_tool_outputs_stream(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "25C"}],
    ) as stream:
        stream.until_done()
        final = stream.get_final_run()
        text = "".join(stream.get_final_messages()[0].content[0].text.value)  # type: ignore[union-attr]
    assert final.status == "completed"
    assert text == "Rome is warm."


def test_incomplete_and_truncation(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    upstream.script = ["a b c d e f g h i j"]
    assistant = make_assistant(client)
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": f"m{i}"} for i in range(5)]
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        max_completion_tokens=3,
        truncation_strategy={"type": "last_messages", "last_messages": 2},
        poll_interval_ms=100,
    )
    assert run.status == "incomplete"
    assert run.incomplete_details is not None
    assert run.incomplete_details.reason == "max_completion_tokens"
    sent = [m["content"] for m in upstream.bodies[-1]["messages"] if m["role"] == "user"]
    assert sent == ["m3", "m4"]
    message = client.beta.threads.messages.list(thread.id).data[0]
    assert message.status == "incomplete"


def test_cancel_a_slow_run(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.behaviour.tokens_per_s = 4
    upstream.behaviour.reply = "slow " * 60
    assistant = make_assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "talk"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    for _ in range(50):
        if client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress":
            break
        time.sleep(0.1)
    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelled.status in ("cancelling", "cancelled")
    final = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=100)
    assert final.status == "cancelled"
    assert upstream.stats.wait_cancelled(timeout=3.0)


def test_a1_other_tenant_sees_nothing(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    upstream.script = [call_text("get_weather", city="Oslo")]
    assistant = make_assistant(client, tools=[WEATHER])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Oslo?"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
    )
    assert run.status == "requires_action"
    message = client.beta.threads.messages.list(thread.id).data[0]
    step = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data[0]
    other = member_key(assistants_server, "tenant-b")
    t, r, m, s, a = thread.id, run.id, message.id, step.id, assistant.id
    cells = [
        ("GET", f"/assistants/{a}", None),
        ("POST", f"/assistants/{a}", {"name": "x"}),
        ("DELETE", f"/assistants/{a}", None),
        ("GET", f"/threads/{t}", None),
        ("POST", f"/threads/{t}", {"metadata": {}}),
        ("DELETE", f"/threads/{t}", None),
        ("GET", f"/threads/{t}/messages", None),
        ("POST", f"/threads/{t}/messages", {"role": "user", "content": "x"}),
        ("GET", f"/threads/{t}/messages/{m}", None),
        ("POST", f"/threads/{t}/messages/{m}", {"metadata": {}}),
        ("DELETE", f"/threads/{t}/messages/{m}", None),
        ("GET", f"/threads/{t}/runs", None),
        ("POST", f"/threads/{t}/runs", {"assistant_id": a}),
        ("GET", f"/threads/{t}/runs/{r}", None),
        ("POST", f"/threads/{t}/runs/{r}", {"metadata": {}}),
        ("POST", f"/threads/{t}/runs/{r}/cancel", None),
        ("POST", f"/threads/{t}/runs/{r}/submit_tool_outputs", {"tool_outputs": []}),
        ("GET", f"/threads/{t}/runs/{r}/steps", None),
        ("GET", f"/threads/{t}/runs/{r}/steps/{s}", None),
        ("POST", "/threads/runs", {"assistant_id": a}),
    ]
    for method, path, body in cells:
        response = raw(assistants_server, method, path, key=other, json=body)
        assert response.status_code == 404, (method, path, response.text)
    # B's own thread, A's assistant: still 404; A's objects never appear in B's lists
    mine = raw(assistants_server, "POST", "/threads", key=other, json={}).json()
    response = raw(
        assistants_server,
        "POST",
        f"/threads/{mine['id']}/runs",
        key=other,
        json={"assistant_id": a},
    )
    assert response.status_code == 404
    listing = raw(assistants_server, "GET", "/assistants", key=other).json()
    assert a not in {x["id"] for x in listing["data"]}
    b = beta_client(assistants_server, other)
    with pytest.raises(openai.NotFoundError):
        b.beta.threads.runs.retrieve(r, thread_id=mine["id"])
    assert client.beta.threads.runs.retrieve(r, thread_id=t).status == "requires_action"


def test_a_run_with_nothing_to_answer_is_a_400(
    client: openai.OpenAI, assistants_server: RixinProcess
) -> None:
    """An empty thread and no instructions: a clear 400 at creation, not a failed run."""
    assistant = client.beta.assistants.create(model="fake-chat", name="silent")
    thread = client.beta.threads.create()
    for create in (
        lambda: client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id),
        lambda: client.beta.threads.create_and_run(assistant_id=assistant.id),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            create()
        body = caught.value.response.json()
        validate_error(body)
        assert body["error"]["param"] in ("thread_id", "thread.messages")
    run = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id, instructions="Say hello."
    )
    assert run.status in ("queued", "in_progress", "completed")
