"""The official openai client against a real ``rixin serve`` on the packaged models.

Every body is validated against OpenAI's published spec. Prompts are short and ``max_tokens``
small: the CI box has two slow cores.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import numpy as np
import openai
import pytest

from conftest import CHAT_MODEL, EMBEDDING_MODEL, RERANK_MODEL
from harness import RixinProcess
from openapi_spec import validate, validate_error

pytestmark = pytest.mark.model

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}


@pytest.fixture(scope="module")
def client(real_server: RixinProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=real_server.api_url, api_key=real_server.admin_key, max_retries=0, timeout=300
    ) as c:
        yield c


def raw(completion: Any) -> dict[str, Any]:
    return json.loads(completion.model_dump_json(exclude_unset=True))


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    page = client.models.list()
    ids = {m.id for m in page.data}
    assert {CHAT_MODEL, EMBEDDING_MODEL, RERANK_MODEL} <= ids
    validate("ListModelsResponse", raw(page))
    model = client.models.retrieve(CHAT_MODEL)
    validate("Model", raw(model))
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("prompt", "expect_cjk"),
    [
        ("Reply with one short English sentence about the sea.", False),
        ("用一句中文介绍北京。", True),
    ],
)
def test_chat_english_and_chinese(client: openai.OpenAI, prompt: str, expect_cjk: bool) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=40, seed=7
    )
    validate("CreateChatCompletionResponse", raw(reply))
    text = reply.choices[0].message.content or ""
    assert text.strip()
    has_cjk = any("\u4e00" <= ch <= "\u9fff" for ch in text)
    assert has_cjk == expect_cjk
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.model == CHAT_MODEL


def test_stream_with_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Count from 1 to 5."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", raw(chunk))
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes and finishes[-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_tool_choice_required(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "What's the weather like in Paris right now?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
        max_tokens=64,
    )
    validate("CreateChatCompletionResponse", raw(reply))
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert calls
    tools = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}
    for call in calls:
        assert call.function.name in tools
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, tools[call.function.name]["function"]["parameters"])


def test_tool_choice_named_in_chinese(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "上海现在几点了？"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=64,
    )
    validate("CreateChatCompletionResponse", raw(reply))
    calls = reply.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]
    jsonschema.validate(
        json.loads(calls[0].function.arguments), TIME_TOOL["function"]["parameters"]
    )


def test_streamed_tool_calls_reassemble(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "What's the weather in Tokyo?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=64,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        validate("CreateChatCompletionStreamResponse", raw(chunk))
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                slot = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += delta.id or ""
                if delta.function:
                    slot["name"] += delta.function.name or ""
                    slot["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert calls and calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER_TOOL["function"]["parameters"])


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=64,
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append(
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"temp_c": 21, "sky": "sunny"}),
        }
    )
    second = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="none",
        max_tokens=48,
        temperature=0,
    )
    validate("CreateChatCompletionResponse", raw(second))
    answer = second.choices[0].message.content or ""
    assert second.choices[0].message.tool_calls is None
    assert "21" in answer or "sunny" in answer.lower()


def test_json_schema_strict(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "strict": True, "schema": schema},
        },
        max_tokens=48,
    )
    validate("CreateChatCompletionResponse", raw(reply))
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), schema)


def test_n_and_stop(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "List three fruits, comma separated."}],
        n=2,
        stop=[","],
        max_tokens=24,
        temperature=0.8,
    )
    validate("CreateChatCompletionResponse", raw(reply))
    assert sorted(c.index for c in reply.choices) == [0, 1]
    for choice in reply.choices:
        assert "," not in (choice.message.content or "")


def test_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,
    )
    validate("CreateChatCompletionResponse", raw(reply))
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content[0].top_logprobs) == 2


def test_multipart_text_content(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "OK."}],
            }
        ],
        max_tokens=8,
    )
    validate("CreateChatCompletionResponse", raw(reply))


def test_completions_fim_echo_and_stream(client: openai.OpenAI) -> None:
    fim = client.completions.create(
        model=CHAT_MODEL,
        prompt="def add(a, b):\n    ",
        suffix="\n\nprint(add(1, 2))\n",
        max_tokens=16,
        temperature=0,
    )
    validate("CreateCompletionResponse", raw(fim))
    assert "return" in fim.choices[0].text
    echoed = client.completions.create(model=CHAT_MODEL, prompt="1, 2, 3,", max_tokens=4, echo=True)
    assert echoed.choices[0].text.startswith("1, 2, 3,")
    chunks = list(
        client.completions.create(model=CHAT_MODEL, prompt="Hello", max_tokens=6, stream=True)
    )
    for chunk in chunks:
        body = raw(chunk)
        # OpenAI's spec reuses CreateCompletionResponse for stream chunks, where finish_reason is
        # not nullable; the real API (and the openai client) send null until the last chunk.
        for choice in body["choices"]:
            choice["finish_reason"] = choice["finish_reason"] or "stop"
        validate("CreateCompletionResponse", body)
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    texts = ["The cat sits on the mat.", "猫坐在垫子上。"]
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=texts)
    validate("CreateEmbeddingResponse", raw(floats))
    assert [len(d.embedding) for d in floats.data] == [384, 384]
    encoded = client.embeddings.with_raw_response.create(
        model=EMBEDDING_MODEL, input=texts, encoding_format="base64"
    )
    body = encoded.http_response.json()
    for a, b in zip(floats.data, body["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), "<f4")
        assert np.allclose(a.embedding, decoded, atol=1e-6)
        # The spec models only the float form; base64 is the same object with a string.
        b["embedding"] = decoded.tolist()
    validate("CreateEmbeddingResponse", body)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=EMBEDDING_MODEL, input="x", dimensions=128)
    assert info.value.param == "dimensions"


def test_embeddings_base64_wire_format(real_server: RixinProcess) -> None:
    response = httpx.post(
        f"{real_server.api_url}/embeddings",
        headers=real_server.headers(),
        json={"model": EMBEDDING_MODEL, "input": "hello", "encoding_format": "base64"},
        timeout=60,
    )
    vector = np.frombuffer(base64.b64decode(response.json()["data"][0]["embedding"]), "<f4")
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-3


def test_rerank(real_server: RixinProcess) -> None:
    response = httpx.post(
        f"{real_server.api_url}/rerank",
        headers=real_server.headers(),
        json={
            "model": RERANK_MODEL,
            "query": "What is the capital of France?",
            "documents": ["Bananas are rich in potassium.", "Paris is the capital of France."],
            "top_n": 1,
        },
        timeout=120,
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["index"] for r in results] == [1]


def test_error_envelopes(real_server: RixinProcess, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "x"}], temperature=3
        )
    assert bad.value.param == "temperature"
    with openai.OpenAI(base_url=real_server.api_url, api_key="sk-rixin-wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    for status, request in [
        (400, {"json": {"model": CHAT_MODEL, "messages": "not-a-list"}}),
        (401, {"json": {}, "headers": {"Authorization": "Bearer sk-rixin-nope"}}),
        (404, {"json": {"model": "nope", "messages": [{"role": "user", "content": "x"}]}}),
        (413, {"content": b"{" + b" " * (9 * 1024 * 1024) + b"}"}),
    ]:
        headers = {**real_server.headers(), **request.pop("headers", {})}  # type: ignore[dict-item]
        response = httpx.post(
            f"{real_server.api_url}/chat/completions", headers=headers, timeout=60, **request
        )
        assert response.status_code == status
        validate_error(response.json())
        assert response.headers["x-request-id"]
