"""The LLM reranker: scoring from crafted logprobs, bounds, errors; and once with the real model."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rixin.engines.base import ChatBody, ChatResult
from rixin.engines.llm_rerank import NEUTRAL, LLMRerank, LLMRerankOptions, create, relevance
from rixin.engines.registry import EngineContext, resolve
from rixin.errors import BackendError, ModelUnavailable, Overloaded
from rixin.settings import ReplicaConfig


def _result(top: list[tuple[str, float]], *, text: str | None = None) -> ChatResult:
    """A chat.completion whose first token had these (token, probability) alternatives."""
    entries = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in top]
    logprobs = {"content": [{**entries[0], "top_logprobs": entries}]} if entries else None
    content = text if text is not None else (top[0][0] if top else "")
    return {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


class FakeChat:
    """Answers each judgement from the document text; records the bodies and the concurrency."""

    def __init__(self, answer: Callable[[str], ChatResult], delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.bodies: list[ChatBody] = []
        self.active = 0
        self.peak = 0

    async def chat(self, body: ChatBody) -> ChatResult:
        self.bodies.append(body)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay)
            document = body["messages"][-1]["content"].split("Document: ", 1)[1]
            return self.answer(document)
        finally:
            self.active -= 1

    async def health(self) -> bool:
        return True


def _reranker(chat: Any, **options: Any) -> LLMRerank:
    ctx = EngineContext(models_dir=Path("unused"), resolve_chat={"judge": chat}.get)
    replica = ReplicaConfig(backend="llm_rerank", options={"chat_model": "judge", **options})
    return create(replica, ctx)


def test_registry_resolves_factory() -> None:
    assert resolve("llm_rerank") is create


def test_relevance_normalises_yes_over_no() -> None:
    choice = _result([("Yes", 0.3), ("no", 0.2), (" yes", 0.2), ("No", 0.1), ("maybe", 0.05)])
    score = relevance(choice["choices"][0])
    assert score == pytest.approx(0.5 / 0.8)


def test_relevance_reads_chinese_answers() -> None:
    assert relevance(_result([("是", 0.6), ("否", 0.2)])["choices"][0]) == pytest.approx(0.75)
    assert relevance(_result([("否", 0.9), ("是", 0.1)])["choices"][0]) == pytest.approx(0.1)


def test_relevance_with_one_side_missing_uses_the_smallest_listed_probability() -> None:
    confident = relevance(_result([("yes", 0.9), ("Sure", 0.05), ("ok", 0.01)])["choices"][0])
    weaker = relevance(_result([("yes", 0.5), ("Sure", 0.3), ("ok", 0.1)])["choices"][0])
    assert confident is not None and weaker is not None
    assert 0.5 < weaker < confident < 1.0


def test_relevance_without_an_answer_is_none() -> None:
    assert relevance(_result([("The", 0.5), ("I", 0.3)])["choices"][0]) is None
    assert relevance({"message": {"content": "yes"}}) is None


async def test_orders_documents_and_builds_the_request() -> None:
    probabilities = {"cats sleep a lot": 0.9, "stocks fell": 0.1, "cats are mammals": 0.6}

    def answer(document: str) -> ChatResult:
        p = next(v for k, v in probabilities.items() if k in document)
        return _result([("yes", p), ("no", 1 - p)])

    chat = FakeChat(answer)
    model = _reranker(chat)
    result = await model.rerank("do cats sleep?", list(probabilities))
    assert result.scores == pytest.approx([0.9, 0.1, 0.6])
    assert result.prompt_tokens == 30
    assert result.extra["fallbacks"] == 0
    body = chat.bodies[0]
    assert body["model"] == "judge"
    assert body["max_tokens"] == 1
    assert body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert "do cats sleep?" in body["messages"][-1]["content"]


async def test_falls_back_to_neutral_or_to_the_text_answer() -> None:
    replies = {
        "a": _result([("Hmm", 0.7), ("The", 0.2)]),  # neither answer: neutral
        "b": _result([], text="Yes."),  # no logprobs from the backend: read the text
        "c": _result([], text="否"),
    }
    model = _reranker(FakeChat(lambda d: replies[d.split()[0]]))
    result = await model.rerank("q", ["a doc", "b doc", "c doc"])
    assert result.scores == [NEUTRAL, 1.0, 0.0]
    assert result.extra["fallbacks"] == 1


async def test_chinese_query_and_documents() -> None:
    def answer(document: str) -> ChatResult:
        relevant = "首都" in document
        return _result([("是", 0.8), ("否", 0.2)] if relevant else [("否", 0.7), ("是", 0.3)])

    chat = FakeChat(answer)
    result = await _reranker(chat).rerank(
        "北京是哪个国家的首都？", ["股市下跌。", "北京是中国的首都。"]
    )
    assert result.scores[1] > result.scores[0]
    assert "北京是哪个国家的首都？" in chat.bodies[0]["messages"][-1]["content"]


async def test_concurrency_is_bounded() -> None:
    chat = FakeChat(lambda d: _result([("yes", 0.5), ("no", 0.5)]), delay=0.01)
    result = await _reranker(chat, concurrency=3).rerank("q", [f"doc {i}" for i in range(12)])
    assert len(result.scores) == 12
    assert chat.peak == 3


async def test_long_inputs_are_truncated() -> None:
    chat = FakeChat(lambda d: _result([("yes", 0.5), ("no", 0.5)]))
    model = _reranker(chat, max_document_chars=100, max_query_chars=20)
    await model.rerank("q" * 1000, ["d" * 10_000])
    prompt = chat.bodies[0]["messages"][-1]["content"]
    assert "d" * 100 in prompt and "d" * 101 not in prompt
    assert "q" * 20 in prompt and "q" * 21 not in prompt


async def test_empty_documents_need_no_chat_model() -> None:
    ctx = EngineContext(models_dir=Path("unused"))
    model = create(ReplicaConfig(backend="llm_rerank", options={"chat_model": "x"}), ctx)
    assert (await model.rerank("q", [])).scores == []


async def test_chat_model_is_resolved_lazily_and_missing_is_unavailable() -> None:
    served: dict[str, Any] = {}
    ctx = EngineContext(models_dir=Path("unused"), resolve_chat=served.get)
    model = create(ReplicaConfig(backend="llm_rerank", options={"chat_model": "judge"}), ctx)
    assert model.name == "llm-rerank:judge"
    assert not await model.health()
    with pytest.raises(ModelUnavailable):
        await model.rerank("q", ["d"])
    served["judge"] = FakeChat(lambda d: _result([("yes", 0.7), ("no", 0.3)]))  # loads later
    assert await model.health()
    assert (await model.rerank("q", ["d"])).scores == pytest.approx([0.7])


async def test_chat_errors_propagate_and_foreign_ones_are_mapped() -> None:
    class Failing(FakeChat):
        def __init__(self, exc: Exception) -> None:
            super().__init__(lambda d: _result([]))
            self.exc = exc

        async def chat(self, body: ChatBody) -> ChatResult:
            raise self.exc

    with pytest.raises(Overloaded):
        await _reranker(Failing(Overloaded("busy"))).rerank("q", ["a", "b"])
    with pytest.raises(BackendError):
        await _reranker(Failing(RuntimeError("boom"))).rerank("q", ["a"])


@pytest.mark.parametrize(
    "options",
    [{}, {"chat_model": ""}, {"chat_model": "m", "concurrency": 0}, {"chat_model": "m", "x": 1}],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ModelUnavailable):
        LLMRerankOptions.parse(options)


# --- the real packaged chat model, driven through xllamacpp ------------------------------------

GGUF = Path("/tmp/models/q05.gguf")


class XllamacppChat:
    """Just enough of a ChatModel over an in-process xllamacpp server for this test."""

    def __init__(self, path: Path) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        x = pytest.importorskip("xllamacpp")
        params = x.CommonParams()
        params.model.path = str(path)
        params.n_ctx = 2048
        params.n_parallel = 2
        params.cpuparams.n_threads = 2
        params.use_jinja = True
        self.server = x.Server(params)

    async def chat(self, body: ChatBody) -> ChatResult:
        result: ChatResult = await asyncio.to_thread(self.server.handle_chat_completions, body)
        return result


@pytest.fixture(scope="module")
def real_chat() -> Iterator[XllamacppChat]:
    if not GGUF.exists():
        pytest.skip(f"no chat model at {GGUF}")
    chat = XllamacppChat(GGUF)
    yield chat
    del chat.server


@pytest.mark.model
@pytest.mark.slow
async def test_real_model_prefers_relevant_documents(real_chat: XllamacppChat) -> None:
    triples = [
        (
            "How many hours do cats sleep?",
            "Cats sleep between 12 and 16 hours every day.",
            "The stock market closed lower on Friday.",
        ),
        (
            "What is the capital of France?",
            "Paris is the capital and largest city of France.",
            "Photosynthesis converts light into chemical energy in plants.",
        ),
        ("猫每天睡多久？", "猫每天睡12到16个小时。", "股市周五收盘下跌。"),
        (
            "北京是哪个国家的首都？",
            "北京是中华人民共和国的首都。",
            "光合作用是植物利用阳光制造养分的过程。",
        ),
    ]
    model = _reranker(real_chat, concurrency=2)
    for query, relevant, unrelated in triples:
        result = await model.rerank(query, [unrelated, relevant])
        assert result.extra["fallbacks"] == 0
        assert result.scores[1] > result.scores[0], (query, result.scores)
        assert result.prompt_tokens > 20
