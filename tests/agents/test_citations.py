"""Spec conformance of what a Responses run says about itself: ``file_citation`` annotations on
answers written from ``file_search`` results, and ``incomplete_details`` inside the spec's enum
with rixin's precise reason beside it. Every body is validated against OpenAI's spec."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate
from rixin.agents import items as itemlib
from rixin.agents.limits import response_incomplete, run_incomplete
from scripted_upstream import ScriptedUpstream, call_text
from zorbia import zorbia_store

from .test_responses import raw_stream, validate_stream

NOOP = {"type": "function", "name": "noop", "parameters": {"type": "object"}}


def get(server: RixinProcess, path: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(
        f"{server.api_url}{path}", headers=server.headers(), timeout=30
    ).json()
    return body


# -- pure rules ---------------------------------------------------------------------------------


SEARCH = {
    "type": "file_search_call",
    "results": [
        {"file_id": "file_a", "filename": "a.txt", "text": "alpha"},
        {"file_id": "file_b", "filename": "b.txt", "text": "beta"},
        {"file_id": "file_a", "filename": "a.txt", "text": "alpha 2"},
    ],
}


def test_markers_cite_the_numbered_results() -> None:
    text = "Alpha [1], beta [2], nonsense [9]."
    notes = itemlib.file_citations(text, [SEARCH])
    assert [(n["file_id"], n["index"]) for n in notes] == [
        ("file_a", text.index("[1]") + 3),
        ("file_b", text.index("[2]") + 3),
    ]
    for note in notes:
        validate("FileCitationBody", note)
    message = itemlib.assistant_message(text, annotations=notes)
    threaded = itemlib.message_annotations(message)
    assert [(n["text"], n["file_citation"]["file_id"]) for n in threaded] == [
        ("[1]", "file_a"),
        ("[2]", "file_b"),
    ]
    for note in threaded:
        validate("MessageContentTextAnnotationsFileCitationObject", note)
        assert text[note["start_index"] : note["end_index"]] == note["text"]


def test_without_markers_each_file_is_cited_once_at_the_end() -> None:
    notes = itemlib.file_citations("It is alpha.", [SEARCH])
    assert [(n["file_id"], n["filename"], n["index"]) for n in notes] == [
        ("file_a", "a.txt", 12),
        ("file_b", "b.txt", 12),
    ]
    assert itemlib.file_citations("It is alpha.", [{"type": "message"}]) == []
    assert itemlib.file_citations("", [SEARCH]) == []


def test_incomplete_reasons_map_onto_the_spec_enums() -> None:
    assert response_incomplete(None) is None
    assert response_incomplete({"reason": "max_tool_calls"}) == {
        "reason": "max_output_tokens",
        "rixin": {"reason": "max_tool_calls"},
    }
    assert response_incomplete({"reason": "max_output_tokens"})["reason"] == (  # type: ignore[index]
        "max_output_tokens"
    )
    assert run_incomplete({"reason": "max_tool_calls"}) == {
        "reason": "max_completion_tokens",
        "rixin": {"reason": "max_tool_calls"},
    }
    assert run_incomplete({"reason": "max_output_tokens"})["reason"] == "max_completion_tokens"
    assert run_incomplete(None) == {"reason": "max_completion_tokens"}


# -- end to end ---------------------------------------------------------------------------------


def test_tool_call_budget_is_incomplete_with_a_spec_reason(
    client: openai.OpenAI, agent_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    upstream.script = [call_text("noop")]
    response = client.responses.create(
        model="fake-chat", input="loop", tools=[NOOP], max_tool_calls=0
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    body = get(agent_server, f"/responses/{response.id}")
    assert body["incomplete_details"] == {
        "reason": "max_output_tokens",
        "rixin": {"reason": "max_tool_calls"},
    }
    validate("Response", body)


@pytest.fixture(scope="module")
def store(client: openai.OpenAI) -> tuple[str, str]:
    return zorbia_store(client, "cite")


@pytest.fixture(scope="module")
def client(agent_server: RixinProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=agent_server.api_url, api_key=agent_server.admin_key)


def test_file_search_answer_cites_its_file(
    client: openai.OpenAI,
    agent_server: RixinProcess,
    upstream: ScriptedUpstream,
    store: tuple[str, str],
) -> None:
    store_id, file_id = store
    upstream.script = [call_text("file_search", query="capital of Zorbia"), "Quentaville [1]."]
    response = client.responses.create(
        model="fake-chat",
        input="What is the capital of Zorbia?",
        tools=[{"type": "file_search", "vector_store_ids": [store_id]}],
    )
    message = response.output[-1]
    assert message.type == "message"
    part = message.content[0]
    assert part.type == "output_text"
    assert [(a.type, a.file_id, a.filename, a.index) for a in part.annotations] == [
        ("file_citation", file_id, "zorbia.txt", len("Quentaville [1]"))
    ]
    validate("Response", get(agent_server, f"/responses/{response.id}"))


def test_streamed_citations_follow_the_spec(
    agent_server: RixinProcess,
    upstream: ScriptedUpstream,
    store: tuple[str, str],
) -> None:
    store_id, file_id = store
    upstream.script = [call_text("file_search", query="Zorbia"), "It is Quentaville."]
    events = raw_stream(
        agent_server,
        {
            "model": "fake-chat",
            "input": "Capital of Zorbia?",
            "tools": [{"type": "file_search", "vector_store_ids": [store_id]}],
        },
    )
    validate_stream(events)
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert [(e["annotation"]["file_id"], e["annotation"]["index"]) for e in added] == [
        (file_id, len("It is Quentaville."))
    ]
    kinds = [e["type"] for e in events]
    assert kinds.index("response.output_text.annotation.added") < kinds.index(
        "response.output_text.done"
    )
    done = next(e for e in events if e["type"] == "response.content_part.done")
    assert done["part"]["annotations"] == [added[0]["annotation"]]
    final = events[-1]["response"]["output"][-1]["content"][0]
    assert final["annotations"] == [added[0]["annotation"]]
