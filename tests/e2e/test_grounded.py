"""Grounded answers (chat completions with a ``rixin`` block) on a real server and real models.

Asserts retrieval and citations, and that the real 0.5B model answers something; never its
wording. Every body is validated against OpenAI's spec.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from conftest import CHAT_MODEL
from harness import RixinProcess
from openapi_spec import validate, validate_error

pytestmark = pytest.mark.model

DENSE_CUTOFF = 0.86

CORPUS = {
    "lighthouse.txt": "The Pebble Island lighthouse was built in 1887. Its lamp house is painted "
    "green and its keeper was Martha Quill.",
    "tomatoes.txt": "Tomatoes need six to eight hours of direct sun a day; water them deeply "
    "twice a week.",
    "熊猫.txt": "大熊猫主要生活在中国四川、陕西和甘肃的山区，几乎只吃竹子。",
    "龙井.txt": "龙井茶产于浙江杭州西湖一带，是中国著名的绿茶。",
}


@pytest.fixture(scope="module")
def client(real_server: RixinProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=real_server.api_url, api_key=real_server.admin_key, max_retries=0, timeout=300
    ) as c:
        yield c


@pytest.fixture(scope="module")
def store_id(client: openai.OpenAI) -> str:
    store = client.vector_stores.create(name="grounding corpus")
    ids = [
        client.files.create(file=(name, text.encode()), purpose="assistants").id
        for name, text in CORPUS.items()
    ]
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=ids, poll_interval_ms=200
    )
    assert batch.file_counts.completed == len(CORPUS)
    return store.id


def raw(obj: Any) -> dict[str, Any]:
    return json.loads(obj.model_dump_json(exclude_unset=True))  # type: ignore[no-any-return]


def ask(client: openai.OpenAI, question: str, rixin: dict[str, Any], **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", 48)
    return client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": question}],
        seed=7,
        extra_body={"rixin": rixin},
        **kwargs,
    )


@pytest.mark.parametrize(
    ("question", "filename"),
    [
        ("When was the Pebble Island lighthouse built?", "lighthouse.txt"),
        ("大熊猫主要吃什么？", "熊猫.txt"),
    ],
)
def test_grounded_answer_cites_the_right_file(
    client: openai.OpenAI, store_id: str, question: str, filename: str
) -> None:
    reply = ask(client, question, {"vector_store_ids": [store_id], "max_num_results": 2})
    body = raw(reply)
    validate("CreateChatCompletionResponse", body)
    citations = body["rixin"]["citations"]
    assert [c["index"] for c in citations] == [1, 2]
    assert citations[0]["filename"] == filename
    assert citations[0]["text"] == CORPUS[filename]
    assert citations[0]["file_id"].startswith("file")
    assert citations[0]["score"] >= citations[1]["score"]
    assert (reply.choices[0].message.content or "").strip()
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


def test_grounded_stream_carries_citations_on_its_first_chunk(
    client: openai.OpenAI, store_id: str
) -> None:
    stream = ask(
        client,
        "What colour is the lighthouse lamp house?",
        {"vector_store_ids": [store_id], "max_num_results": 1},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", raw(chunk))
    citations = raw(chunks[0])["rixin"]["citations"]
    assert [(c["index"], c["filename"]) for c in citations] == [(1, "lighthouse.txt")]
    assert all("rixin" not in raw(c) for c in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Who painted the Mona Lisa?", "The knowledge base has no answer to this question."),
        ("蒙娜丽莎是谁画的？", "知识库中没有找到这个问题的答案。"),
    ],
)
def test_no_answer_without_calling_the_model(
    client: openai.OpenAI, store_id: str, question: str, expected: str
) -> None:
    # Dense cosine similarity (multilingual-e5-small) on this corpus, measured: the right file
    # 0.92-0.93, unrelated questions at most 0.81. RRF scores are relative (best hit ~1.0).
    rixin = {"vector_store_ids": [store_id], "ranker": "dense", "score_threshold": DENSE_CUTOFF}
    best = client.vector_stores.search(
        store_id, query=question, ranking_options={"ranker": "dense"}
    ).data[0]
    assert best.score < DENSE_CUTOFF
    reply = ask(client, question, rixin)
    body = raw(reply)
    validate("CreateChatCompletionResponse", body)
    assert reply.choices[0].message.content == expected
    assert body["rixin"] == {"citations": []}
    assert reply.usage is not None and reply.usage.total_tokens == 0  # the model was not called

    chunks = list(ask(client, question, rixin, stream=True))
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", raw(chunk))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert raw(chunks[0])["rixin"] == {"citations": []}
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_dense_cutoff_keeps_relevant_sources(client: openai.OpenAI, store_id: str) -> None:
    rixin = {"vector_store_ids": [store_id], "ranker": "dense", "score_threshold": DENSE_CUTOFF}
    reply = ask(client, "大熊猫主要吃什么？", rixin, max_tokens=24)
    assert [c["filename"] for c in raw(reply)["rixin"]["citations"]] == ["熊猫.txt"]


def test_empty_store_has_no_answer(client: openai.OpenAI) -> None:
    empty = client.vector_stores.create(name="empty")
    reply = ask(client, "What is in here?", {"vector_store_ids": [empty.id]})
    assert reply.choices[0].message.content == "The knowledge base has no answer to this question."


def test_foreign_or_unknown_store_is_404(
    real_server: RixinProcess, client: openai.OpenAI, store_id: str
) -> None:
    admin = real_server.headers()
    project = httpx.post(
        f"{real_server.api_url}/organization/projects", headers=admin, json={"name": "grounding B"}
    ).json()
    key = httpx.post(
        f"{real_server.api_url}/organization/projects/{project['id']}/api_keys",
        headers=admin,
        json={"name": "b"},
    ).json()["value"]
    with openai.OpenAI(base_url=real_server.api_url, api_key=key, max_retries=0) as other:
        for ids in ([store_id], ["vs_nope"]):
            with pytest.raises(openai.NotFoundError) as info:
                ask(other, "When was the lighthouse built?", {"vector_store_ids": ids})
            assert info.value.param == "rixin.vector_store_ids"
            validate_error({"error": info.value.body})
    response = httpx.post(
        f"{real_server.api_url}/chat/completions",
        headers=real_server.headers(key),
        json={
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "rixin": {"vector_store_ids": [store_id]},
        },
        timeout=60,
    )
    assert response.status_code == 404  # before any stream starts
    validate_error(response.json())


def test_bad_grounding_options_are_400(client: openai.OpenAI, store_id: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "x", {"vector_store_ids": [store_id], "max_num_results": 0})
    assert "max_num_results" in str(info.value.param)
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "x", {"vector_store_ids": [store_id], "ranker": "nope"})
    assert info.value.param == "rixin.ranker"
