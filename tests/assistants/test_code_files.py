"""``code_interpreter`` files for Assistants: ``tool_resources.code_interpreter.file_ids`` are
copied into the run's sandbox, and the images the code writes show up as ``image`` outputs of
the run step and ``image_file`` parts of the answer."""

from __future__ import annotations

import io
from typing import Any

import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate, validate_error
from scripted_upstream import ScriptedUpstream, call_text

from .conftest import beta_client, member_key, raw
from .test_assistants_api import sse_events

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOT = """
import csv
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
with open("data.csv") as fh:
    rows = list(csv.DictReader(fh))
print("total", sum(int(r["sales"]) for r in rows))
plt.bar([r["month"] for r in rows], [int(r["sales"]) for r in rows])
plt.savefig("sales.png")
"""


def get(server: RixinProcess, path: str) -> Any:
    response = raw(server, "GET", path)
    assert response.status_code == 200, response.text
    return response.json()


def _code_step(server: RixinProcess, thread_id: str, run_id: str) -> Any:
    steps = get(server, f"/threads/{thread_id}/runs/{run_id}/steps?order=asc")
    validate("ListRunStepsResponse", steps)
    return steps["data"][0]


def test_files_in_and_images_out(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    data = client.files.create(
        file=("data.csv", io.BytesIO(b"month,sales\njan,3\nfeb,4\n")), purpose="assistants"
    )
    assistant = client.beta.assistants.create(
        model="fake-chat",
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [data.id]}},
    )
    body = get(assistants_server, f"/assistants/{assistant.id}")
    validate("AssistantObject", body)
    assert body["tool_resources"] == {"code_interpreter": {"file_ids": [data.id]}}

    for _attempt in range(2):  # the sandbox's first spawn can fail
        upstream.script = [call_text("code_interpreter", code=PLOT), "Here is the chart."]
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "Plot it."}])
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
        )
        assert run.status == "completed", run.last_error
        step = _code_step(assistants_server, thread.id, run.id)
        outputs = step["step_details"]["tool_calls"][0]["code_interpreter"]["outputs"]
        if any(o["type"] == "image" for o in outputs):
            break
    validate("RunStepObject", step)
    assert "total 7" in outputs[0]["logs"]
    images = [o for o in outputs if o["type"] == "image"]
    assert len(images) == 1
    image_id = images[0]["image"]["file_id"]
    assert client.files.content(image_id).read().startswith(PNG_MAGIC)

    messages = get(assistants_server, f"/threads/{thread.id}/messages?run_id={run.id}")
    validate("ListMessagesResponse", messages)
    content = messages["data"][0]["content"]
    assert content[0]["text"]["value"] == "Here is the chart."
    assert {"type": "image_file", "image_file": {"file_id": image_id}} in content


def test_streamed_run_shows_the_image(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    data = client.files.create(
        file=("data.csv", io.BytesIO(b"month,sales\njan,1\nfeb,2\n")), purpose="assistants"
    )
    assistant = client.beta.assistants.create(
        model="fake-chat",
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [data.id]}},
    )
    for _attempt in range(2):  # the sandbox's first spawn can fail
        upstream.script = [call_text("code_interpreter", code=PLOT), "Done."]
        events = sse_events(
            assistants_server,
            "/threads/runs",
            {
                "assistant_id": assistant.id,
                "thread": {"messages": [{"role": "user", "content": "Plot it."}]},
                "stream": True,
            },
        )
        deltas = [e["data"] for e in events if e["event"] == "thread.run.step.delta"]
        call = deltas[0]["delta"]["step_details"]["tool_calls"][0] if deltas else {}
        outputs = call.get("code_interpreter", {}).get("outputs", [])
        if any(o["type"] == "image" for o in outputs):
            break
    for event in events:
        validate("AssistantStreamEvent", event)
    image = next(o for o in outputs if o["type"] == "image")
    assert image["index"] == 1 and image["image"]["file_id"].startswith("file")
    done = next(e["data"] for e in events if e["event"] == "thread.message.completed")
    assert done["content"][1] == {"type": "image_file", "image_file": image["image"]}


def test_thread_files_reach_the_sandbox(
    client: openai.OpenAI, assistants_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    data = client.files.create(file=("in.txt", io.BytesIO(b"hello")), purpose="assistants")
    assistant = client.beta.assistants.create(
        model="fake-chat", tools=[{"type": "code_interpreter"}]
    )
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Read the file."}],
        tool_resources={"code_interpreter": {"file_ids": [data.id]}},
    )
    validate("ThreadObject", get(assistants_server, f"/threads/{thread.id}"))
    for _attempt in range(2):  # the sandbox's first spawn can fail
        code = "print(open('in.txt').read())"
        upstream.script = [call_text("code_interpreter", code=code), "ok"]
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
        )
        assert run.status == "completed", run.last_error
        step = _code_step(assistants_server, thread.id, run.id)
        outputs = step["step_details"]["tool_calls"][0]["code_interpreter"]["outputs"]
        if "hello" in outputs[0]["logs"]:
            break
    assert [o["type"] for o in outputs] == ["logs"]
    assert "hello" in outputs[0]["logs"]


def test_another_projects_file_is_404(
    client: openai.OpenAI, assistants_server: RixinProcess
) -> None:
    mine = client.files.create(file=("a.csv", io.BytesIO(b"a\n1\n")), purpose="assistants")
    other = beta_client(assistants_server, member_key(assistants_server, "code-files"))
    resources = {"code_interpreter": {"file_ids": [mine.id]}}
    with pytest.raises(openai.NotFoundError) as info:
        other.beta.assistants.create(
            model="fake-chat", tools=[{"type": "code_interpreter"}], tool_resources=resources
        )
    body = info.value.response.json()
    validate_error(body)
    assert body["error"]["param"] == "tool_resources.code_interpreter.file_ids"
    with pytest.raises(openai.NotFoundError):
        other.beta.threads.create(tool_resources=resources)
