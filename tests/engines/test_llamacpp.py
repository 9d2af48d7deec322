"""The llama.cpp backend: plumbing on a scripted server, behaviour on the real 0.5B model."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest

from rixin.engines.llamacpp import DEFAULT_FIM_TEMPLATE, LlamaCppChatModel, create
from rixin.engines.registry import EngineContext
from rixin.errors import (
    BackendError,
    ContextLengthExceeded,
    InvalidRequest,
    ModelUnavailable,
    UnsupportedParameter,
)
from rixin.services.toolcalls import (
    constrained_tool_schema,
    extract_tool_calls,
    tool_response_format,
)
from rixin.settings import ReplicaConfig

FAST = "qwen2.5-coder-0.5b-instruct-q4"
CJK = re.compile(r"[\u4e00-\u9fff]")
Callback = Callable[[dict[str, Any]], bool]


# -- plumbing, against a scripted server (no model) --------------------------------------------


class ScriptedServer:
    """Answers like xllamacpp.Server with canned dicts; records what it was sent."""

    def __init__(self, answer: Any = None, chunks: list[Any] | None = None) -> None:
        self.answer = answer
        self.chunks = chunks or []
        self.requests: list[dict[str, Any]] = []

    def _handle(self, body: dict[str, Any], callback: Callback | None = None) -> Any:
        self.requests.append(body)
        if isinstance(self.answer, Exception):
            raise self.answer
        if callback is None:
            return self.answer
        for chunk in self.chunks:
            if callback(chunk):
                break
        return None

    handle_chat_completions = _handle
    handle_completions = _handle


def scripted(server: ScriptedServer, fim: str | None = DEFAULT_FIM_TEMPLATE) -> LlamaCppChatModel:
    return LlamaCppChatModel("m", server, n_ctx=4096, n_parallel=2, fim_template=fim)


CHAT_RESULT = {
    "choices": [
        {
            "finish_reason": "stop",
            "index": 0,
            "message": {"role": "assistant", "content": "hi", "reasoning_content": ""},
            "logprobs": {
                "content": [
                    {
                        "id": 5,
                        "token": "hi",
                        "bytes": [104, 105],
                        "logprob": -0.1,
                        "top_logprobs": [{"id": 5, "token": "hi", "bytes": [1], "logprob": -0.1}],
                    }
                ]
            },
        }
    ],
    "created": 1,
    "model": "/some/path.gguf",
    "object": "chat.completion",
    "usage": {"completion_tokens": 1, "prompt_tokens": 3, "total_tokens": 4},
    "id": "chatcmpl-abc",
    "timings": {"prompt_n": 3},
}


async def test_chat_result_is_trimmed_to_openai_keys() -> None:
    server = ScriptedServer(CHAT_RESULT)
    result = await scripted(server).chat({"messages": [], "stream_options": {}})
    assert "timings" not in result
    assert result["model"] == "m"
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    entry = result["choices"][0]["logprobs"]["content"][0]
    assert "id" not in entry and "id" not in entry["top_logprobs"][0]
    assert server.requests[0]["stream"] is False
    assert "stream_options" not in server.requests[0]


@pytest.mark.parametrize(
    ("answer", "error", "param"),
    [
        (
            {
                "error": {
                    "code": 400,
                    "type": "exceed_context_size_error",
                    "n_ctx": 8,
                    "message": "",
                }
            },
            ContextLengthExceeded,
            "messages",
        ),
        (
            {"error": {"code": 400, "type": "invalid_request_error", "message": "Field 'n': no"}},
            InvalidRequest,
            "n",
        ),
        (
            {"error": {"code": 501, "type": "not_supported_error", "message": "x"}},
            UnsupportedParameter,
            None,
        ),
        ({"error": {"code": 500, "type": "server_error", "message": "boom"}}, BackendError, None),
        (ValueError("'messages' is required"), InvalidRequest, "messages"),
        (
            ValueError("JSON schema error at #: unrecognized type"),
            InvalidRequest,
            "response_format",
        ),
        (RuntimeError("native crash"), BackendError, None),
        ("not a dict", BackendError, None),
    ],
)
async def test_errors_are_mapped(answer: Any, error: type[Exception], param: str | None) -> None:
    with pytest.raises(error) as info:
        await scripted(ScriptedServer(answer)).chat({"messages": []})
    assert type(info.value) is error
    assert getattr(info.value, "param", None) == param


async def test_completion_context_error_names_prompt() -> None:
    answer = {"error": {"type": "exceed_context_size_error", "n_ctx": 8, "n_prompt_tokens": 9}}
    with pytest.raises(ContextLengthExceeded) as info:
        await scripted(ScriptedServer(answer)).complete({"prompt": "x"})
    assert info.value.param == "prompt"
    assert "8" in info.value.message and "9" in info.value.message


async def test_stream_error_chunk_raises() -> None:
    server = ScriptedServer(chunks=[{"error": {"type": "exceed_context_size_error"}}])
    with pytest.raises(ContextLengthExceeded):
        async for _ in scripted(server).stream_chat({"messages": []}):
            pass


async def test_stream_exception_raises() -> None:
    server = ScriptedServer(ValueError("bad"))
    with pytest.raises(InvalidRequest):
        async for _ in scripted(server).stream_complete({"prompt": "x"}):
            pass


async def test_fim_prompt_and_echo_are_built_here() -> None:
    answer = {
        "choices": [
            {
                "text": "return a + b",
                "index": 0,
                "finish_reason": "stop",
                "logprobs": {
                    "content": [
                        {"token": "return", "logprob": -0.5, "top_logprobs": []},
                        {"token": " a + b", "logprob": -0.2, "top_logprobs": []},
                    ]
                },
            }
        ],
        "id": "chatcmpl-x",
        "object": "text_completion",
    }
    server = ScriptedServer(answer)
    body: dict[str, Any] = {
        "prompt": "def f(a, b):\n    ",
        "suffix": "\n",
        "echo": True,
        "logprobs": 1,
    }
    result = await scripted(server).complete(body)
    sent = server.requests[0]
    assert sent["prompt"] == "<|fim_prefix|>def f(a, b):\n    <|fim_suffix|>\n<|fim_middle|>"
    assert "suffix" not in sent and "echo" not in sent
    assert result["id"] == "cmpl-x"
    choice = result["choices"][0]
    assert choice["text"] == "def f(a, b):\n    return a + b"
    assert choice["logprobs"] == {
        "tokens": ["return", " a + b"],
        "token_logprobs": [-0.5, -0.2],
        "top_logprobs": [{}, {}],
        "text_offset": [len(body["prompt"]), len(body["prompt"]) + 6],
    }


async def test_suffix_without_fim_tokens_is_unsupported() -> None:
    with pytest.raises(UnsupportedParameter) as info:
        await scripted(ScriptedServer({}), fim=None).complete({"prompt": "a", "suffix": "b"})
    assert info.value.param == "suffix"


async def test_echo_with_token_prompt_is_unsupported() -> None:
    with pytest.raises(UnsupportedParameter):
        await scripted(ScriptedServer({})).complete({"prompt": [1, 2, 3], "echo": True})


async def test_closed_model_is_unavailable() -> None:
    model = scripted(ScriptedServer(CHAT_RESULT))
    assert await model.health()
    await model.aclose()
    await model.aclose()  # idempotent
    assert not await model.health()
    with pytest.raises(ModelUnavailable):
        await model.chat({"messages": []})


def test_factory_refuses_bad_configs(tmp_path: Path) -> None:
    ctx = EngineContext(models_dir=tmp_path)
    with pytest.raises(ModelUnavailable, match="package' or 'path"):
        create(ReplicaConfig(backend="llamacpp"), ctx)
    with pytest.raises(ModelUnavailable, match="does not exist"):
        create(ReplicaConfig(backend="llamacpp", path=str(tmp_path / "x.gguf")), ctx)
    with pytest.raises(ModelUnavailable, match="unknown llamacpp options"):
        create(ReplicaConfig(backend="llamacpp", path="x", options={"n_gpu": 1}), ctx)
    with pytest.raises(ModelUnavailable, match="fim_template"):
        create(ReplicaConfig(backend="llamacpp", path="x", options={"fim_template": "{x}"}), ctx)
    pickled = tmp_path / "model.bin"
    pickled.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelUnavailable, match="pickle"):
        create(ReplicaConfig(backend="llamacpp", path=str(pickled)), ctx)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(ModelUnavailable, match="sha256"):
        create(ReplicaConfig(backend="llamacpp", path=str(gguf), options={"sha256": "0" * 64}), ctx)


# -- behaviour, against the real packaged 0.5B model --------------------------------------------


@pytest.fixture(scope="module")
def model(fast_model_path: Path) -> Iterator[LlamaCppChatModel]:
    ctx = EngineContext(
        models_dir=fast_model_path.parent, inference_threads=2, n_ctx=2048, n_parallel=2
    )
    replica = ReplicaConfig(backend="llamacpp", package=FAST, upstream_model="qwen-test")
    loaded = create(replica, ctx)
    yield loaded
    asyncio.run(loaded.aclose())


class CountingServer:
    """Wraps the real server to count native stream callbacks, before and after a close."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0
        self.after_close = 0
        self.closed = threading.Event()
        self.finished = threading.Event()

    def handle_chat_completions(
        self, body: dict[str, Any], callback: Callback | None = None
    ) -> Any:
        if callback is None:
            return self.real.handle_chat_completions(body)

        def counting(chunk: dict[str, Any]) -> bool:
            self.calls += 1
            if self.closed.is_set():
                self.after_close += 1
            return callback(chunk)

        try:
            return self.real.handle_chat_completions(body, counting)
        finally:
            self.finished.set()


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "temperature": 0, **extra}


@pytest.mark.model
async def test_capabilities_and_health(model: LlamaCppChatModel) -> None:
    assert model.name == "qwen-test"
    caps = model.capabilities
    assert caps.streaming and caps.tools and caps.json_schema and caps.logprobs and caps.fim
    assert caps.constrained_tools
    assert caps.context_window == 2048
    assert await model.health()


@pytest.mark.model
async def test_chat_english(model: LlamaCppChatModel) -> None:
    result = await model.chat(user("Say hello in one word.", max_tokens=8))
    assert result["object"] == "chat.completion"
    assert result["model"] == "qwen-test"
    assert "timings" not in result
    assert result["choices"][0]["message"]["content"].strip()
    assert result["usage"]["completion_tokens"] <= 8


@pytest.mark.model
async def test_chat_chinese(model: LlamaCppChatModel) -> None:
    result = await model.chat(user("请用中文回答：中国的首都是哪个城市？", max_tokens=16))
    assert CJK.search(result["choices"][0]["message"]["content"])


@pytest.mark.model
async def test_stream_with_usage(model: LlamaCppChatModel) -> None:
    body = user("Say hi.", max_tokens=8, stream_options={"include_usage": True})
    chunks = [c async for c in model.stream_chat(body)]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "qwen-test" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] <= 8
    assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)


@pytest.mark.model
async def test_closing_the_stream_stops_generation(
    model: LlamaCppChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingServer(model._server)
    monkeypatch.setattr(model, "_server", counting)
    stream = model.stream_chat(user("Count from 1 to 200, one number per line.", max_tokens=200))
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    counting.closed.set()
    await stream.aclose()
    assert await asyncio.to_thread(counting.finished.wait, 30)
    assert counting.after_close <= 1  # the callback after close returned True
    assert counting.calls < 20


@pytest.mark.model
async def test_cancelled_consumer_stops_generation(
    model: LlamaCppChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingServer(model._server)
    monkeypatch.setattr(model, "_server", counting)

    async def consume() -> None:
        async for _ in model.stream_chat(user("Write a long story.", max_tokens=200)):
            pass

    task = asyncio.create_task(consume())
    deadline = time.monotonic() + 30
    while counting.calls < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    counting.closed.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(counting.finished.wait, 30)
    assert counting.after_close <= 1
    assert counting.calls < 20


@pytest.mark.model
async def test_event_loop_keeps_running_during_generation(model: LlamaCppChatModel) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await model.chat(user("Say hi.", max_tokens=8))
    finally:
        task.cancel()
    assert ticks >= 5


@pytest.mark.model
async def test_json_schema_output_parses(model: LlamaCppChatModel) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population_millions": {"type": "integer"}},
        "required": ["city", "population_millions"],
        "additionalProperties": False,
    }
    body = user(
        "Give the largest city of China as JSON.",
        max_tokens=32,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "strict": True, "schema": schema},
        },
    )
    content = (await model.chat(body))["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), schema)


@pytest.mark.model
async def test_required_tool_call_is_constrained_and_extracted(model: LlamaCppChatModel) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    schema = constrained_tool_schema(tools, "required", True)
    assert schema is not None
    body = user("北京天气怎么样？", max_tokens=32, response_format=tool_response_format(schema))
    content = (await model.chat(body))["choices"][0]["message"]["content"]
    calls = extract_tool_calls(content, tools)
    assert calls is not None and calls[0]["function"]["name"] == "get_weather"
    assert "city" in json.loads(calls[0]["function"]["arguments"])


@pytest.mark.model
async def test_n_choices(model: LlamaCppChatModel) -> None:
    result = await model.chat(user("Pick a color.", max_tokens=4, n=2, temperature=1.0, seed=1))
    assert [c["index"] for c in result["choices"]] == [0, 1]


@pytest.mark.model
async def test_stop_sequence(model: LlamaCppChatModel) -> None:
    result = await model.complete(
        {"prompt": "1, 2, 3, 4,", "max_tokens": 16, "temperature": 0, "stop": ["7"]}
    )
    choice = result["choices"][0]
    assert result["object"] == "text_completion"
    assert "7" not in choice["text"]
    assert choice["finish_reason"] == "stop"


@pytest.mark.model
async def test_fill_in_the_middle(model: LlamaCppChatModel) -> None:
    result = await model.complete(
        {
            "prompt": "def add(a, b):\n    ",
            "suffix": "\n\nprint(add(1, 2))\n",
            "max_tokens": 12,
            "temperature": 0,
        }
    )
    assert "return" in result["choices"][0]["text"]


@pytest.mark.model
async def test_echo_and_legacy_logprobs(model: LlamaCppChatModel) -> None:
    prompt = "def add(a, b):"
    result = await model.complete(
        {"prompt": prompt, "max_tokens": 4, "temperature": 0, "echo": True, "logprobs": 2}
    )
    choice = result["choices"][0]
    assert choice["text"].startswith(prompt) and len(choice["text"]) > len(prompt)
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == 4
    assert all(isinstance(top, dict) and len(top) <= 2 for top in logprobs["top_logprobs"])
    assert logprobs["text_offset"][0] >= len(prompt)


@pytest.mark.model
async def test_stream_completion_with_echo(model: LlamaCppChatModel) -> None:
    prompt = "import os\n"
    chunks = [
        c
        async for c in model.stream_complete(
            {"prompt": prompt, "max_tokens": 4, "temperature": 0, "echo": True}
        )
    ]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text.startswith(prompt)
    assert all(c["model"] == "qwen-test" for c in chunks)


@pytest.mark.model
async def test_context_length_exceeded(model: LlamaCppChatModel) -> None:
    long_text = "hello " * 3000
    with pytest.raises(ContextLengthExceeded) as info:
        await model.chat(user(long_text, max_tokens=4))
    assert info.value.param == "messages"
    with pytest.raises(ContextLengthExceeded) as info:
        await model.complete({"prompt": long_text, "max_tokens": 4})
    assert info.value.param == "prompt"
    with pytest.raises(ContextLengthExceeded):
        async for _ in model.stream_chat(user(long_text, max_tokens=4)):
            pass


@pytest.mark.model
@pytest.mark.parametrize(("extra", "param"), [({"max_tokens": -5}, "max_tokens"), ({"n": 5}, "n")])
async def test_invalid_parameters(
    model: LlamaCppChatModel, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        await model.chat(user("hi", **extra))
    assert info.value.param == param


@pytest.mark.model
async def test_path_with_sha256_pin_loads_and_closes(fast_model_path: Path, tmp_path: Path) -> None:
    with fast_model_path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    replica = ReplicaConfig(
        backend="llamacpp",
        path=str(fast_model_path),
        options={"sha256": digest, "n_ctx": 512, "n_parallel": 1, "fim_template": None},
    )
    loaded = await asyncio.to_thread(create, replica, EngineContext(models_dir=tmp_path))
    try:
        assert loaded.name == fast_model_path.stem
        assert not loaded.capabilities.fim
        assert (await loaded.chat(user("hi", max_tokens=2)))["choices"]
    finally:
        await loaded.aclose()
    assert not await loaded.health()
    with pytest.raises(ModelUnavailable):
        await loaded.chat(user("hi", max_tokens=2))
