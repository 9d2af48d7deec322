"""``code_interpreter`` files in and out: a container's ``file_ids`` are readable by the code,
and the files the code writes come back as project files (images also as ``outputs``), cited by
the answer with ``container_file_citation``."""

from __future__ import annotations

import io
from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate, validate_error
from rixin.agents import items as itemlib
from scripted_upstream import call_text

from .test_responses import raw_stream, validate_stream

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOT = """
import csv
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
with open("data.csv") as fh:
    rows = list(csv.DictReader(fh))
total = sum(int(r["sales"]) for r in rows)
print("total", total)
plt.bar([r["month"] for r in rows], [int(r["sales"]) for r in rows])
plt.savefig("sales.png")
with open("summary.txt", "w") as fh:
    fh.write(f"total={total}")
"""


def _create(client: openai.OpenAI, upstream: Any, code: str, file_ids: list[str]) -> Any:
    """A response whose model runs ``code`` once; retried once, as the sandbox's first spawn
    can fail (see ``test_code_interpreter_in_the_sandbox``)."""
    for _attempt in range(2):
        upstream.script = [call_text("code_interpreter", code=code), "Here is the chart."]
        response = client.responses.create(
            model="fake-chat",
            input="Plot the monthly sales.",
            tools=[
                {"type": "code_interpreter", "container": {"type": "auto", "file_ids": file_ids}}
            ],
            include=["code_interpreter_call.outputs"],
        )
        assert response.status == "completed", response.error
        if response.output[0].status == "completed":
            break
    return response


def test_files_in_and_out(client: openai.OpenAI, agent_server: RixinProcess, upstream: Any) -> None:
    data = client.files.create(
        file=("data.csv", io.BytesIO(b"month,sales\njan,3\nfeb,4\n")), purpose="user_data"
    )
    response = _create(client, upstream, PLOT, [data.id])
    call = response.output[0]
    assert call.type == "code_interpreter_call"
    assert call.status == "completed", str(upstream.bodies[-1]["messages"])[-600:]
    assert call.outputs is not None
    logs = [o for o in call.outputs if o.type == "logs"]
    images = [o for o in call.outputs if o.type == "image"]
    assert "total 7" in logs[0].logs
    assert len(images) == 1
    assert images[0].url.startswith(agent_server.api_url.split("://")[0])
    image_id = images[0].url.split("/files/")[1].removesuffix("/content")
    assert client.files.content(image_id).read().startswith(PNG_MAGIC)
    assert client.files.retrieve(image_id).purpose == "assistants_output"

    tool_result = str(upstream.bodies[-1]["messages"])
    assert "sales.png" in tool_result and "summary.txt" in tool_result

    message = response.output[-1]
    assert message.type == "message"
    notes = [a for a in message.content[0].annotations if a.type == "container_file_citation"]
    by_name = {n.filename: n for n in notes}
    assert set(by_name) == {"sales.png", "summary.txt"}
    assert by_name["sales.png"].file_id == image_id
    assert by_name["sales.png"].container_id == call.container_id
    text = client.files.content(by_name["summary.txt"].file_id).read()
    assert text == b"total=7"

    body = httpx.get(
        f"{agent_server.api_url}/responses/{response.id}",
        params={"include[]": "code_interpreter_call.outputs"},
        headers=agent_server.headers(),
        timeout=30,
    ).json()
    validate("Response", body)


def test_input_files_are_not_reported_as_outputs(client: openai.OpenAI, upstream: Any) -> None:
    data = client.files.create(file=("in.txt", io.BytesIO(b"hello")), purpose="user_data")
    response = _create(client, upstream, "print(open('in.txt').read())", [data.id])
    call = response.output[0]
    assert call.outputs is not None and "hello" in call.outputs[0].logs
    assert [o.type for o in call.outputs] == ["logs"]
    assert not response.output[-1].content[0].annotations


def test_another_projects_file_is_404(
    client: openai.OpenAI, other_tenant: openai.OpenAI, agent_server: RixinProcess
) -> None:
    mine = client.files.create(file=("data.csv", io.BytesIO(b"a,b\n1,2\n")), purpose="user_data")
    with pytest.raises(openai.NotFoundError) as info:
        other_tenant.responses.create(
            model="fake-chat",
            input="x",
            tools=[
                {"type": "code_interpreter", "container": {"type": "auto", "file_ids": [mine.id]}}
            ],
        )
    body = info.value.response.json()
    validate_error(body)
    assert body["error"]["param"].endswith("container.file_ids")


def test_streamed_answer_announces_its_container_citations(
    agent_server: RixinProcess, upstream: Any
) -> None:
    annotation_event = "response.output_text.annotation.added"
    code = "open('out.txt', 'w').write('x')"
    for _attempt in range(2):  # the sandbox's first spawn can fail
        upstream.script = [call_text("code_interpreter", code=code), "Written."]
        events = raw_stream(
            agent_server,
            {
                "model": "fake-chat",
                "input": "Write a file.",
                "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
            },
        )
        done = [e for e in events if e["type"] == "response.output_item.done"]
        if done and done[0]["item"]["status"] == "completed":
            break
    validate_stream(events)
    notes = [e for e in events if e["type"] == annotation_event]
    assert [n["annotation"]["type"] for n in notes] == ["container_file_citation"]
    assert notes[0]["annotation"]["filename"] == "out.txt"


def test_container_citations_cite_files_since_the_last_message() -> None:
    def call(*names: str) -> dict[str, Any]:
        files = [{"file_id": f"file-{n}", "filename": n} for n in names]
        return {"type": "code_interpreter_call", "container_id": "cntr_1", "files": files}

    earlier = [call("a.png"), {"type": "message"}, call("b.csv"), call(), call("c.txt")]
    notes = itemlib.file_citations("Done.", earlier)
    assert [(n["filename"], n["start_index"], n["end_index"]) for n in notes] == [
        ("b.csv", 5, 5),
        ("c.txt", 5, 5),
    ]
    assert {n["container_id"] for n in notes} == {"cntr_1"}
    assert itemlib.file_citations("Done.", [*earlier, {"type": "message"}]) == []
