"""OpenAICompat* against the fake upstream over real loopback HTTP: shapes, errors, streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rixin.engines import registry
from rixin.engines.base import Capabilities
from rixin.engines.openai_compat import (
    OpenAICompatChat,
    ServerSentEvent,
    SSEDecoder,
    _Upstream,
    create_chat,
    create_embedding,
    create_rerank,
    parse_retry_after,
)
from rixin.engines.registry import EngineContext
from rixin.errors import BackendError, BackendStatusError, BackendTimeout, ModelUnavailable
from rixin.settings import ReplicaConfig
from rixin.testing.fake_upstream import FakeUpstream, embed_text, rerank_score

KEY = "sk-test-Secret0123456789abcdef"
BODY: dict[str, Any] = {"model": "served-id", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream(api_key=KEY)
    with fake.serve() as base_url:
        yield fake, base_url


@pytest.fixture
def fake(server: tuple[FakeUpstream, str]) -> FakeUpstream:
    server[0].reset()
    return server[0]


@pytest.fixture
def base_url(server: tuple[FakeUpstream, str]) -> str:
    return server[1]


def replica(base_url: str, backend: str = "openai_compat", **kw: Any) -> ReplicaConfig:
    kw.setdefault("timeout_s", 2.0)
    return ReplicaConfig(
        backend=backend, base_url=base_url, api_key_env="UP_KEY", upstream_model="up-model", **kw
    )


def ctx(key: str = KEY) -> EngineContext:
    return EngineContext(models_dir=Path("unused"), secrets={"UP_KEY": key})


@pytest.fixture
async def chat(base_url: str) -> AsyncIterator[OpenAICompatChat]:
    model = create_chat(replica(base_url), ctx())
    yield model
    await model.aclose()


@pytest.fixture
async def quick_chat(base_url: str) -> AsyncIterator[OpenAICompatChat]:
    """Times out after 0.3 s."""
    model = create_chat(replica(base_url, timeout_s=0.3), ctx())
    yield model
    await model.aclose()


async def drain(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


# --------------------------------------------------------------------------- happy paths


async def test_chat_sends_key_and_upstream_model(chat: OpenAICompatChat, fake: FakeUpstream):
    result = await chat.chat(BODY)
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"]["content"] == fake.behaviour.reply
    assert fake.stats.last_body is not None
    assert fake.stats.last_body["model"] == "up-model"
    assert fake.stats.last_body["stream"] is False
    assert chat.capabilities.tools and chat.capabilities.json_schema


async def test_stream_chat_yields_openai_chunks(chat: OpenAICompatChat, fake: FakeUpstream):
    chunks = await drain(chat.stream_chat({**BODY, "stream_options": {"include_usage": True}}))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == fake.behaviour.reply
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert fake.stats.last_body is not None and fake.stats.last_body["stream"] is True


async def test_completions_plain_and_streamed(chat: OpenAICompatChat, fake: FakeUpstream):
    body = {"model": "x", "prompt": "def f(", "max_tokens": 3}
    result = await chat.complete(body)
    assert result["object"] == "text_completion"
    assert result["choices"][0]["finish_reason"] == "length"
    chunks = await drain(chat.stream_complete(body))
    assert "".join(c["choices"][0]["text"] for c in chunks) == result["choices"][0]["text"]


async def test_embeddings_are_float32_normalised_in_input_order(base_url: str, fake: FakeUpstream):
    rep = replica(base_url, "openai_compat_embedding", options={"query_prefix": "query: "})
    model = create_embedding(rep, ctx())
    try:
        result = await model.embed(["alpha", "beta gamma"], input_type="query")
    finally:
        await model.aclose()
    assert result.vectors.dtype == np.float32
    assert result.vectors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, rtol=1e-5)
    expected = embed_text("query: beta gamma", 64)
    np.testing.assert_allclose(result.vectors[1], expected / np.linalg.norm(expected), rtol=1e-5)
    assert result.prompt_tokens == 5
    assert fake.stats.last_body is not None
    assert fake.stats.last_body["input"] == ["query: alpha", "query: beta gamma"]


async def test_rerank_scores_come_back_in_input_order(base_url: str, fake: FakeUpstream):
    model = create_rerank(replica(base_url, "openai_compat_rerank"), ctx())
    docs = ["cats are nice", "dogs and cats", "nothing relevant", "dogs"]
    try:
        result = await model.rerank("dogs cats", docs)
    finally:
        await model.aclose()
    assert result.scores == [rerank_score("dogs cats", d) for d in docs]
    assert fake.stats.last_body is not None
    assert fake.stats.last_body["top_n"] == len(docs)


async def test_health(chat: OpenAICompatChat, fake: FakeUpstream, base_url: str):
    assert await chat.health()
    fake.behaviour.status = 503
    assert not await chat.health()
    fake.behaviour.status = 200
    unauthorised = create_chat(replica(base_url), ctx("sk-wrong-key-000000"))
    try:
        assert not await unauthorised.health()
    finally:
        await unauthorised.aclose()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "code", "retry_after", "client_error"),
    [
        (400, "context_length_exceeded", None, True),
        (401, "invalid_api_key", None, False),
        (429, "rate_limit_exceeded", "3", False),
        (500, None, None, False),
        (503, None, "7", False),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_http_errors_map_to_backend_status_error(
    chat: OpenAICompatChat,
    fake: FakeUpstream,
    status: int,
    code: str | None,
    retry_after: str | None,
    client_error: bool,
    streaming: bool,
):
    fake.behaviour.status = status
    fake.behaviour.error_code = code
    fake.behaviour.error_param = "messages" if status == 400 else None
    fake.behaviour.retry_after = retry_after
    with pytest.raises(BackendStatusError) as info:
        if streaming:
            await drain(chat.stream_chat(BODY))
        else:
            await chat.chat(BODY)
    exc = info.value
    assert exc.upstream_status == status
    assert exc.is_client_error is client_error
    assert exc.retry_after == (float(retry_after) if retry_after else None)
    error = exc.upstream_body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["param"] == fake.behaviour.error_param


def test_parse_retry_after():
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480) == 10
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


async def test_hang_times_out_and_upstream_sees_the_disconnect(
    quick_chat: OpenAICompatChat, fake: FakeUpstream
):
    fake.behaviour.hang = True
    with pytest.raises(BackendTimeout):
        await quick_chat.chat(BODY)
    assert await asyncio.to_thread(fake.stats.wait_cancelled, 1, 1.0)


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("reset_after", BackendError),
        ("invalid_json_after", BackendError),
        ("error_event_after", BackendError),
        ("stall_after", BackendTimeout),
    ],
)
async def test_mid_stream_failures_raise_after_delivered_chunks(
    quick_chat: OpenAICompatChat, fake: FakeUpstream, setting: str, error: type[BackendError]
):
    setattr(fake.behaviour, setting, 5)
    received: list[dict[str, Any]] = []
    with pytest.raises(error) as info:
        async for chunk in quick_chat.stream_chat(BODY):
            received.append(chunk)
    assert len(received) == 6  # the role chunk and five content chunks
    if error is BackendError:
        assert not isinstance(info.value, BackendTimeout)


async def test_closing_the_stream_cancels_the_upstream_within_1s(
    chat: OpenAICompatChat, fake: FakeUpstream
):
    fake.behaviour.tokens_per_s = 20
    stream = chat.stream_chat(BODY)
    await anext(stream)
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert await asyncio.to_thread(fake.stats.wait_cancelled, 1, 1.0)
    assert fake.stats.completed == 0


async def test_upstream_key_never_appears_in_errors_or_logs(
    base_url: str, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-Key9876543210zyxwvu"
    model = create_chat(replica(base_url), ctx(wrong))
    try:
        with pytest.raises(BackendStatusError) as info:
            await model.chat(BODY)  # the fake echoes the presented key in its 401 body
        with pytest.raises(BackendStatusError) as streamed:
            await drain(model.stream_chat(BODY))
    finally:
        await model.aclose()
    for exc in (info.value, streamed.value):
        assert exc.upstream_status == 401
        for text in (str(exc), repr(exc), repr(exc.upstream_body), repr(exc.body())):
            assert wrong not in text and KEY not in text
    assert wrong not in caplog.text and KEY not in caplog.text


async def test_connection_refused_is_a_backend_error_without_the_key():
    with socket_port() as port:
        pass  # the port is free again: nothing listens there
    model = create_chat(replica(f"http://127.0.0.1:{port}/v1"), ctx())
    try:
        with pytest.raises(BackendError) as info:
            await model.chat(BODY)
        assert not await model.health()
    finally:
        await model.aclose()
    assert not isinstance(info.value, BackendStatusError)
    assert KEY not in str(info.value)


class socket_port:
    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


async def test_redirects_are_not_followed_and_keep_the_key_home():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(307, headers={"location": "http://elsewhere.example/v1/x"})

    upstream = _Upstream(
        "m",
        "http://upstream.example/v1",
        api_key=KEY,
        timeout_s=1.0,
        max_connections=2,
        transport=httpx.MockTransport(handler),
    )
    model = OpenAICompatChat(upstream, upstream_model="m", capabilities=Capabilities())
    try:
        with pytest.raises(BackendStatusError) as info:
            await model.chat(BODY)
    finally:
        await model.aclose()
    assert info.value.upstream_status == 307
    assert [r.url.host for r in seen] == ["upstream.example"]


async def test_stream_cut_cleanly_before_done_is_an_error():
    def handler(request: httpx.Request) -> httpx.Response:
        body = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    upstream = _Upstream("m", "http://u.example/v1", api_key=None, timeout_s=1.0,
                         max_connections=2, transport=httpx.MockTransport(handler))  # fmt: skip
    model = OpenAICompatChat(upstream, upstream_model=None, capabilities=Capabilities())
    try:
        with pytest.raises(BackendError, match="before \\[DONE\\]"):
            await drain(model.stream_chat(BODY))
    finally:
        await model.aclose()


# --------------------------------------------------------------------------- SSE decoding


def test_sse_decoder_handles_line_endings_comments_and_multiline_data():
    decoder = SSEDecoder()
    stream = (
        ': keep-alive\r\ndata: {"a":\r\ndata: 1}\r\n\r\nevent: error\ndata: x\n\ndata: [DONE]\r'
    )
    events: list[ServerSentEvent] = []
    for i in range(0, len(stream), 3):  # split at awkward places, including inside "\r\n"
        events += decoder.feed(stream[i : i + 3])
    events += decoder.feed("\r")  # a lone "\r" ends a line only once the next char is known
    events += decoder.end()
    assert events == [
        ServerSentEvent("message", '{"a":\n1}'),
        ServerSentEvent("error", "x"),
        ServerSentEvent("message", "[DONE]"),
    ]


def test_sse_decoder_drops_an_unterminated_event_and_caps_event_size():
    decoder = SSEDecoder(max_event_chars=32)
    assert decoder.feed("data: partial") == []
    assert decoder.end() == []
    with pytest.raises(ValueError):
        decoder.feed("data: " + "x" * 64)


# --------------------------------------------------------------------------- factories


def test_registered_as_builtin_engines():
    assert registry.resolve("openai_compat") is create_chat
    assert registry.resolve("openai_compat_embedding") is create_embedding
    assert registry.resolve("openai_compat_rerank") is create_rerank


def test_factory_refuses_missing_base_url_and_missing_key():
    with pytest.raises(ModelUnavailable, match="base_url"):
        create_chat(ReplicaConfig(backend="openai_compat"), ctx())
    rep = ReplicaConfig(backend="openai_compat", base_url="http://x/v1", api_key_env="NOPE")
    with pytest.raises(ModelUnavailable, match="NOPE"):
        create_chat(rep, ctx())


async def test_capabilities_come_from_options(base_url: str):
    caps = {"tools": False, "vision": True, "context_window": 32768, "languages": ["en"]}
    model = create_chat(replica(base_url, options={"capabilities": caps}), ctx())
    await model.aclose()
    assert model.capabilities.tools is False
    assert model.capabilities.json_schema is True
    assert model.capabilities.vision is True
    assert model.capabilities.languages == ("en",)
    with pytest.raises(ModelUnavailable):
        create_chat(replica(base_url, options={"capabilities": {"bogus": 1}}), ctx())


async def test_a_finished_stream_leaves_its_connection_to_the_next_request(
    chat: OpenAICompatChat, fake: FakeUpstream
):
    """What follows ``[DONE]`` is read, so the pooled connection is reused, not re-opened."""
    for _ in range(3):
        await drain(chat.stream_chat(BODY))
    ports = fake.stats.client_ports[-3:]
    assert len(set(ports)) == 1, ports
