"""External knowledge: rixin serving Dify's External Knowledge API (``/v1/dify/retrieval``)
over its vector stores, and a vector store backed by such an endpoint (rixin consuming rixin),
end to end on a real server with the packaged embedding model."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess, free_port
from openapi_spec import validate, validate_error
from rixin.knowledge.conditions import plan
from rixin.knowledge.external import ExternalSource, attributes, document_id
from rixin.schemas.dify import MetadataCondition, Record
from vector_stores.corpus import DOCS
from vector_stores.support import MODELS, Tenant, make_tenant

ENV_KEY = "RIXIN_TEST_KB_KEY"


@pytest.fixture(scope="module")
def kb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RixinProcess]:
    """Loopback allowed as a knowledge host (rixin consumes itself), a short upstream timeout."""
    server = RixinProcess(
        tmp_path_factory.mktemp("rixin-kb") / "data",
        models=MODELS,
        env={
            "RIXIN_KNOWLEDGE__ALLOWED_HOSTS": json.dumps(["127.0.0.1"]),
            "RIXIN_KNOWLEDGE__API_KEY_ENVS": json.dumps([ENV_KEY]),
            "RIXIN_KNOWLEDGE__TIMEOUT_S": "2",
        },
    )
    server.start(timeout_s=120)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def owner(kb_server: RixinProcess) -> Tenant:
    return make_tenant(kb_server, "kb owner")


@pytest.fixture(scope="module")
def consumer(kb_server: RixinProcess) -> Tenant:
    return make_tenant(kb_server, "kb consumer")


@pytest.fixture(scope="module")
def corpus(owner: Tenant) -> str:
    """The owner's store with the four corpus documents and their attributes."""
    ids = {name: owner.upload(name, text) for name, (text, _) in DOCS.items()}
    store = owner.client.vector_stores.create(name="kb corpus")
    batch = owner.client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id,
        files=[{"file_id": ids[name], "attributes": attrs} for name, (_, attrs) in DOCS.items()],
        poll_interval_ms=100,
    )
    assert batch.file_counts.completed == len(DOCS), batch
    return store.id


def retrieve(
    server: RixinProcess,
    key: str | None,
    knowledge_id: str,
    query: str,
    *,
    top_k: int = 4,
    score_threshold: float = 0.0,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body = {
        "knowledge_id": knowledge_id,
        "query": query,
        "retrieval_setting": {"top_k": top_k, "score_threshold": score_threshold},
        **extra,
    }
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{server.api_url}/dify/retrieval", json=body, headers=sent, timeout=60)


def records(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"records"}
    for record in body["records"]:
        assert set(record) == {"content", "score", "title", "metadata"}
        assert isinstance(record["metadata"], dict) and record["metadata"]["file_id"]
        assert 0.0 <= record["score"] <= 1.0
    return list(body["records"])


def dify_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code and body["error_msg"], body
    validate_error(body)  # OpenAI's envelope is kept next to Dify's fields
    return dict(body)


# -- serving Dify ---------------------------------------------------------------------------------


def test_retrieval_records(kb_server: RixinProcess, owner: Tenant, corpus: str) -> None:
    got = records(retrieve(kb_server, owner.key, corpus, "how do photovoltaic cells work", top_k=2))
    assert 1 <= len(got) <= 2
    best = got[0]
    assert best["title"] == "solar.txt"
    assert "Photovoltaic" in best["content"]
    assert best["metadata"]["lang"] == "en" and best["metadata"]["year"] == 2019
    assert best["metadata"]["file_id"].startswith("file")
    assert [r["score"] for r in got] == sorted((r["score"] for r in got), reverse=True)

    one = records(retrieve(kb_server, owner.key, corpus, "大熊猫生活在哪里", top_k=1))
    assert [r["title"] for r in one] == ["panda.txt"]


def test_retrieval_score_threshold(kb_server: RixinProcess, owner: Tenant, corpus: str) -> None:
    query = "which volcano in Sicily is active"
    everything = records(retrieve(kb_server, owner.key, corpus, query))
    scores = sorted({r["score"] for r in everything}, reverse=True)
    assert len(scores) >= 2
    cut = (scores[0] + scores[1]) / 2
    kept = records(retrieve(kb_server, owner.key, corpus, query, score_threshold=cut))
    assert kept and all(r["score"] >= cut for r in kept)
    assert len(kept) == len([r for r in everything if r["score"] >= cut])
    assert kept[0]["title"] == "volcano.md"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # translated to attribute filters
        (
            {"conditions": [{"name": "lang", "comparison_operator": "is", "value": "zh"}]},
            {"panda.txt", "tea.md"},
        ),
        (
            {"conditions": [{"name": "year", "comparison_operator": "≥", "value": "2021"}]},
            {"volcano.md", "tea.md"},
        ),
        (
            {
                "logical_operator": "or",
                "conditions": [
                    {"name": "topic", "comparison_operator": "in", "value": ["energy", "food"]},
                    {"name": "year", "comparison_operator": "=", "value": 2020},
                ],
            },
            {"solar.txt", "tea.md", "panda.txt"},
        ),
        # checked on the records (our filters have no such operator)
        (
            {
                "conditions": [
                    {"name": ["topic"], "comparison_operator": "start with", "value": "geo"}
                ]
            },
            {"volcano.md"},
        ),
        (
            {
                "logical_operator": "and",
                "conditions": [
                    {"name": "lang", "comparison_operator": "is not", "value": "zh"},
                    {"name": "topic", "comparison_operator": "not contains", "value": "erg"},
                ],
            },
            {"volcano.md"},
        ),
        (
            {
                "logical_operator": "or",
                "conditions": [
                    {"name": "topic", "comparison_operator": "end with", "value": "mals"},
                    {"name": "year", "comparison_operator": "<", "value": 2020},
                ],
            },
            {"panda.txt", "solar.txt"},
        ),
        (
            {"conditions": [{"name": "missing", "comparison_operator": "not empty"}]},
            set(),
        ),
    ],
)
def test_retrieval_metadata_condition(
    kb_server: RixinProcess,
    owner: Tenant,
    corpus: str,
    condition: dict[str, Any],
    expected: set[str],
) -> None:
    got = records(
        retrieve(
            kb_server, owner.key, corpus, "energy volcano panda tea", metadata_condition=condition
        )
    )
    assert {r["title"] for r in got} == expected


def test_retrieval_errors(
    kb_server: RixinProcess, owner: Tenant, consumer: Tenant, corpus: str
) -> None:
    query = "solar"
    dify_error(retrieve(kb_server, None, corpus, query), 401, 1001)
    dify_error(
        retrieve(kb_server, None, corpus, query, headers={"Authorization": "Basic x"}), 401, 1001
    )
    dify_error(retrieve(kb_server, "sk-rixin-wrong", corpus, query), 401, 1002)
    unknown = dify_error(retrieve(kb_server, owner.key, "vs_missing", query), 404, 2001)
    assert unknown["error"]["type"] == "invalid_request_error"
    # another project's store does not exist for the caller
    dify_error(retrieve(kb_server, consumer.key, corpus, query), 404, 2001)
    invalid = httpx.post(
        f"{kb_server.api_url}/dify/retrieval",
        json={"knowledge_id": corpus, "retrieval_setting": {"top_k": 2}},
        headers={"Authorization": f"Bearer {owner.key}"},
    )
    assert dify_error(invalid, 400, 400)["error"]["param"] == "query"
    bad_value = retrieve(
        kb_server,
        owner.key,
        corpus,
        query,
        metadata_condition={
            "conditions": [{"name": "year", "comparison_operator": ">", "value": "x"}]
        },
    )
    assert (
        dify_error(bad_value, 400, 400)["error"]["param"]
        == "metadata_condition.conditions[0].value"
    )


# -- consuming an external endpoint --------------------------------------------------------------


def external_store(tenant: Tenant, **source: Any) -> Any:
    return tenant.client.vector_stores.create(
        name="external", extra_body={"rixin": {"external": source}}
    )


@pytest.fixture(scope="module")
def backed(kb_server: RixinProcess, owner: Tenant, consumer: Tenant, corpus: str) -> str:
    """The consumer's store, backed by the owner's corpus through ``/v1/dify``."""
    store = external_store(
        consumer, endpoint=f"{kb_server.api_url}/dify", knowledge_id=corpus, api_key=owner.key
    )
    return str(store.id)


def test_external_store_view_hides_the_key(
    kb_server: RixinProcess, owner: Tenant, consumer: Tenant, corpus: str, backed: str
) -> None:
    for store in (
        consumer.client.vector_stores.retrieve(backed),
        next(s for s in consumer.client.vector_stores.list(limit=100) if s.id == backed),
    ):
        body = store.to_dict(mode="json")
        validate("VectorStoreObject", body)
        assert body["rixin"]["external"] == {
            "endpoint": f"{kb_server.api_url}/dify",
            "knowledge_id": corpus,
            "api_key_env": None,
            "api_key_set": True,
        }
        assert owner.key not in json.dumps(body)
        assert body["file_counts"]["total"] == 0


def test_external_search_end_to_end(consumer: Tenant, backed: str) -> None:
    page = consumer.client.vector_stores.search(
        backed, query="how do photovoltaic cells make electricity", max_num_results=2
    )
    data = page.to_dict(mode="json")
    validate("VectorStoreSearchResultsPage", data)
    assert 1 <= len(data["data"]) <= 2
    best = data["data"][0]
    assert best["filename"] == "solar.txt"
    assert "Photovoltaic" in best["content"][0]["text"]
    assert best["attributes"]["lang"] == "en" and best["attributes"]["reviewed"] is True
    assert best["file_id"].startswith("extfile_")
    again = consumer.client.vector_stores.search(backed, query="photovoltaic solar panels")
    assert best["file_id"] in {item.file_id for item in again.data}  # stable ids

    zh = consumer.client.vector_stores.search(
        backed, query="茶", filters={"type": "eq", "key": "lang", "value": "zh"}
    )
    assert {item.filename for item in zh.data} <= {"panda.txt", "tea.md"} and zh.data
    nested = consumer.client.vector_stores.search(  # Dify cannot say this: filtered here
        backed,
        query="energy volcano panda tea",
        filters={
            "type": "or",
            "filters": [
                {"type": "eq", "key": "topic", "value": "geology"},
                {
                    "type": "and",
                    "filters": [
                        {"type": "eq", "key": "lang", "value": "zh"},
                        {"type": "gt", "key": "year", "value": 2021},
                    ],
                },
            ],
        },
    )
    assert {item.filename for item in nested.data} == {"volcano.md", "tea.md"}
    strict = consumer.client.vector_stores.search(
        backed, query="volcano", ranking_options={"score_threshold": 0.99}
    )
    assert all(item.score >= 0.99 for item in strict.data)


def test_external_store_takes_no_files(consumer: Tenant, backed: str) -> None:
    file_id = consumer.upload("note.txt", "nothing to see")
    with pytest.raises(openai.BadRequestError) as err:
        consumer.client.vector_stores.files.create(vector_store_id=backed, file_id=file_id)
    body = err.value.response.json()
    validate_error(body)
    assert "external knowledge endpoint" in body["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        consumer.client.vector_stores.file_batches.create(
            vector_store_id=backed, file_ids=[file_id]
        )


@pytest.mark.parametrize(
    "endpoint", ["http://169.254.169.254/latest", "http://10.1.2.3/api", "http://[::1]:8000/v1"]
)
def test_external_endpoint_ssrf_refused(consumer: Tenant, endpoint: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        external_store(consumer, endpoint=endpoint, knowledge_id="kb1")
    body = err.value.response.json()
    validate_error(body)
    assert body["error"]["param"] == "rixin.external.endpoint"
    assert "private or local address" in body["error"]["message"]


def test_external_endpoint_must_be_http(consumer: Tenant) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        external_store(consumer, endpoint="file:///etc/passwd", knowledge_id="kb1")
    validate_error(err.value.response.json())


def _search_error(tenant: Tenant, store_id: str, status: int) -> dict[str, Any]:
    with pytest.raises(openai.APIStatusError) as err:
        tenant.client.vector_stores.search(store_id, query="anything")
    assert err.value.status_code == status, err.value.response.text
    body = err.value.response.json()
    validate_error(body)
    assert "Traceback" not in err.value.response.text
    return dict(body["error"])


def test_external_endpoint_down(consumer: Tenant) -> None:
    store = external_store(
        consumer, endpoint=f"http://127.0.0.1:{free_port()}/v1/dify", knowledge_id="x"
    )
    error = _search_error(consumer, store.id, 502)
    assert error["code"] == "backend_error"
    assert "could not be reached" in error["message"]


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """Accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_external_endpoint_timeout(consumer: Tenant, silent_endpoint: str) -> None:
    store = external_store(consumer, endpoint=silent_endpoint, knowledge_id="x")
    error = _search_error(consumer, store.id, 504)
    assert "did not answer within 2 s" in error["message"]


def test_external_endpoint_refuses_the_key(
    kb_server: RixinProcess, consumer: Tenant, corpus: str
) -> None:
    store = external_store(
        consumer, endpoint=f"{kb_server.api_url}/dify", knowledge_id=corpus, api_key="sk-wrong"
    )
    error = _search_error(consumer, store.id, 502)
    assert "HTTP 401" in error["message"] and "1002" in error["message"]
    assert "sk-wrong" not in error["message"]


def test_external_key_from_environment(
    kb_server: RixinProcess, consumer: Tenant, corpus: str
) -> None:
    endpoint = f"{kb_server.api_url}/dify"
    with pytest.raises(openai.BadRequestError) as err:  # only allowlisted names
        external_store(consumer, endpoint=endpoint, knowledge_id=corpus, api_key_env="HOME")
    assert err.value.response.json()["error"]["param"] == "rixin.external.api_key_env"
    store = external_store(consumer, endpoint=endpoint, knowledge_id=corpus, api_key_env=ENV_KEY)
    assert store.to_dict()["rixin"]["external"]["api_key_env"] == ENV_KEY
    error = _search_error(consumer, store.id, 502)  # allowlisted but not set on this server
    assert ENV_KEY in error["message"]


# -- the pieces ----------------------------------------------------------------------------------


def test_record_mapping_is_stable_and_bounded() -> None:
    source = ExternalSource(endpoint="https://bank.example/api", knowledge_id="kb1")
    record = Record.model_validate(
        {"content": "x", "score": 7, "title": "a.pdf", "metadata": {"doc_id": "d1", "n": None}}
    )
    same_doc = Record(content="y", title="other", metadata={"doc_id": "d1"})
    assert document_id(source, record) == document_id(source, same_doc)
    assert document_id(source, record) != document_id(
        ExternalSource(endpoint="https://bank.example/api", knowledge_id="kb2"), record
    )
    assert Record.model_validate({"metadata": None, "score": None}).metadata == {}
    many = {f"k{i}": "v" * 600 for i in range(20)} | {"nested": {"a": 1}}
    attrs = attributes(many)
    assert len(attrs) == 16 and all(len(str(v)) == 512 for v in attrs.values())


def test_plan_splits_conditions() -> None:
    both = MetadataCondition.model_validate(
        {
            "conditions": [
                {"name": "lang", "comparison_operator": "is", "value": "en"},
                {"name": "title", "comparison_operator": "contains", "value": "loan"},
                {"name": "day", "comparison_operator": "after", "value": "2024-01-01"},
            ]
        }
    )
    how = plan(both)
    assert how.filters == {"type": "eq", "key": "lang", "value": "en"}
    assert how.residual is not None
    assert how.residual({"title": "car loan", "day": "2024-03-01T00:00:00Z"})
    assert not how.residual({"title": "car loan", "day": "2023-12-31"})
    assert plan(None).filters is None and plan(None).residual is None
