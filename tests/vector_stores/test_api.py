"""The Vector Stores API end to end with the official client; bodies checked against the spec."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate, validate_error
from vector_stores.corpus import DOCS, QUERIES
from vector_stores.support import EMBEDDING_MODEL, Tenant, wait_idle


@pytest.fixture(scope="module")
def corpus(tenant_a: Tenant) -> dict[str, Any]:
    """One store holding the four corpus documents with their attributes (a file batch)."""
    client = tenant_a.client
    ids = {name: tenant_a.upload(name, text) for name, (text, _) in DOCS.items()}
    store = client.vector_stores.create(name="corpus", metadata={"suite": "api"})
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id,
        files=[{"file_id": ids[name], "attributes": attrs} for name, (_, attrs) in DOCS.items()],
        poll_interval_ms=100,
    )
    assert batch.status == "completed", batch
    assert batch.file_counts.completed == len(DOCS)
    return {"store": store.id, "files": ids, "names": {v: k for k, v in ids.items()}}


def _search(tenant: Tenant, store: str, **body: Any) -> dict[str, Any]:
    page = tenant.client.vector_stores.search(store, **body)
    data = page.to_dict(mode="json")
    validate("VectorStoreSearchResultsPage", data)
    return data


def _names(corpus: dict[str, Any], data: dict[str, Any]) -> list[str]:
    return [corpus["names"][item["file_id"]] for item in data["data"]]


# -- vector stores ----------------------------------------------------------------------------


def test_create_retrieve_update_list_delete(tenant_a: Tenant) -> None:
    client = tenant_a.client
    store = client.vector_stores.create(
        name="crud", metadata={"k": "v"}, expires_after={"anchor": "last_active_at", "days": 7}
    )
    body = store.to_dict(mode="json")
    validate("VectorStoreObject", body)
    assert body["object"] == "vector_store" and body["status"] == "completed"
    assert body["file_counts"] == {
        "in_progress": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "total": 0,
    }
    assert body["expires_at"] == body["last_active_at"] + 7 * 86400
    assert body["rixin"]["embedding_model"] == EMBEDDING_MODEL

    updated = client.vector_stores.update(store.id, name="renamed", metadata={"k": "w"})
    validate("VectorStoreObject", updated.to_dict(mode="json"))
    assert (updated.name, updated.metadata) == ("renamed", {"k": "w"})
    assert client.vector_stores.retrieve(store.id).name == "renamed"

    others = [client.vector_stores.create(name=f"page-{i}").id for i in range(3)]
    listed = client.vector_stores.list(limit=2, order="desc")
    page = listed.to_dict(mode="json")
    validate("ListVectorStoresResponse", page)
    assert [s["id"] for s in page["data"]] == [others[2], others[1]]
    assert page["has_more"] is True
    after = client.vector_stores.list(limit=2, order="desc", after=others[1])
    assert [s.id for s in after.data] == [others[0], store.id]
    ascending = [s.id for s in client.vector_stores.list(order="asc", limit=100).data]
    assert ascending.index(store.id) < ascending.index(others[0]) < ascending.index(others[2])
    before = client.vector_stores.list(limit=1, order="desc", before=others[0])
    assert [s.id for s in before.data] == [others[1]]

    deleted = client.vector_stores.delete(store.id)
    validate("DeleteVectorStoreResponse", deleted.to_dict(mode="json"))
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)
    for other in others:
        client.vector_stores.delete(other)


@pytest.mark.parametrize(
    ("strategy", "param"),
    [
        (
            {"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}},
            "chunking_strategy.static.max_chunk_size_tokens",
        ),
        (
            {
                "type": "static",
                "static": {"max_chunk_size_tokens": 4097, "chunk_overlap_tokens": 0},
            },
            "chunking_strategy.static.max_chunk_size_tokens",
        ),
        (
            {
                "type": "static",
                "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 101},
            },
            "chunking_strategy.static.chunk_overlap_tokens",
        ),
        (
            {"type": "static", "static": {"max_chunk_size_tokens": 200}},
            "chunking_strategy.static.chunk_overlap_tokens",
        ),
        ({"type": "fancy"}, "chunking_strategy.type"),
    ],
)
def test_chunking_strategy_is_validated(
    vs_server: RixinProcess, tenant_a: Tenant, strategy: dict[str, Any], param: str
) -> None:
    headers = {"Authorization": f"Bearer {tenant_a.key}"}
    url = f"{vs_server.api_url}/vector_stores"
    response = httpx.post(url, headers=headers, json={"chunking_strategy": strategy})
    assert response.status_code == 400
    validate_error(response.json())
    assert response.json()["error"]["param"] == param

    store = tenant_a.client.vector_stores.create(name="chunking")
    file_id = tenant_a.upload("c.txt", "text")
    response = httpx.post(
        f"{url}/{store.id}/files",
        headers=headers,
        json={"file_id": file_id, "chunking_strategy": strategy},
    )
    assert (response.status_code, response.json()["error"]["param"]) == (400, param)
    response = httpx.post(
        f"{url}/{store.id}/file_batches",
        headers=headers,
        json={"files": [{"file_id": file_id}, {"file_id": file_id, "chunking_strategy": strategy}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "files[1]." + param
    assert tenant_a.client.vector_stores.retrieve(store.id).file_counts.total == 0


def test_static_chunking_is_applied(tenant_a: Tenant) -> None:
    client = tenant_a.client
    text = " ".join(f"Sentence number {i} talks about item {i}." for i in range(120))
    store = client.vector_stores.create(name="static")
    vsf = client.vector_stores.files.create_and_poll(
        vector_store_id=store.id,
        file_id=tenant_a.upload("long.txt", text),
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50},
        },
        poll_interval_ms=100,
    )
    body = vsf.to_dict(mode="json")
    validate("VectorStoreFileObject", body)
    assert body["chunking_strategy"] == {
        "type": "static",
        "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50},
    }
    assert client.vector_stores.retrieve(store.id).to_dict()["rixin"]["chunks"] >= 6
    content = client.vector_stores.files.content(file_id=vsf.id, vector_store_id=store.id)
    assert "".join(part.text for part in content.data).replace(" ", "") == text.replace(" ", "")


def test_unknown_embedding_model_is_refused(vs_server: RixinProcess, tenant_a: Tenant) -> None:
    response = httpx.post(
        f"{vs_server.api_url}/vector_stores",
        headers={"Authorization": f"Bearer {tenant_a.key}"},
        json={"name": "x", "rixin": {"embedding_model": "no-such-model"}},
    )
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "rixin.embedding_model"


# -- files and batches -------------------------------------------------------------------------


def test_files_list_retrieve_update_content_delete(tenant_a: Tenant) -> None:
    client = tenant_a.client
    store = client.vector_stores.create(name="files")
    ids = [tenant_a.upload(f"f{i}.txt", f"File number {i} about topic {i}.") for i in range(3)]
    for file_id in ids:
        vsf = client.vector_stores.files.create(
            vector_store_id=store.id, file_id=file_id, attributes={"n": ids.index(file_id)}
        )
        validate("VectorStoreFileObject", vsf.to_dict(mode="json"))
    wait_idle(client, store.id)

    page = client.vector_stores.files.list(vector_store_id=store.id, filter="completed")
    validate("ListVectorStoreFilesResponse", page.to_dict(mode="json"))
    assert {f.id for f in page.data} == set(ids)
    assert client.vector_stores.files.list(vector_store_id=store.id, filter="failed").data == []
    first = client.vector_stores.files.list(vector_store_id=store.id, limit=2, order="asc")
    assert [f.id for f in first.data] == ids[:2] and first.has_more

    retrieved = client.vector_stores.files.retrieve(file_id=ids[1], vector_store_id=store.id)
    assert (retrieved.status, retrieved.attributes, retrieved.last_error) == (
        "completed",
        {"n": 1},
        None,
    )
    updated = client.vector_stores.files.update(
        file_id=ids[1], vector_store_id=store.id, attributes={"n": 10, "tag": "x"}
    )
    assert updated.attributes == {"n": 10, "tag": "x"}

    content = client.vector_stores.files.content(file_id=ids[2], vector_store_id=store.id)
    validate("VectorStoreFileContentResponse", content.to_dict(mode="json"))
    assert [part.text for part in content.data] == ["File number 2 about topic 2."]

    deleted = client.vector_stores.files.delete(file_id=ids[0], vector_store_id=store.id)
    validate("DeleteVectorStoreFileResponse", deleted.to_dict(mode="json"))
    store_after = client.vector_stores.retrieve(store.id)
    assert store_after.file_counts.total == 2
    assert store_after.to_dict()["rixin"]["chunks"] == 2
    found = client.vector_stores.search(store.id, query="File number 0 about topic 0")
    assert ids[0] not in {item.file_id for item in found.data}
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(file_id=ids[0], vector_store_id=store.id)
    client.files.retrieve(ids[0])  # detaching keeps the file itself


def test_batch_with_file_ids_and_listing(tenant_a: Tenant) -> None:
    client = tenant_a.client
    store = client.vector_stores.create(name="batch")
    ids = [tenant_a.upload(f"b{i}.txt", f"Batch file {i}.") for i in range(4)]
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=ids, attributes={"src": "batch"}, poll_interval_ms=100
    )
    body = batch.to_dict(mode="json")
    validate("VectorStoreFileBatchObject", body)
    assert body["object"] == "vector_store.files_batch"
    assert (batch.status, batch.file_counts.completed, batch.file_counts.total) == (
        "completed",
        4,
        4,
    )
    listed = client.vector_stores.file_batches.list_files(
        batch_id=batch.id, vector_store_id=store.id, limit=10
    )
    validate("ListVectorStoreFilesResponse", listed.to_dict(mode="json"))
    assert {f.id for f in listed.data} == set(ids)
    assert all(f.attributes == {"src": "batch"} for f in listed.data)
    again = client.vector_stores.file_batches.retrieve(batch_id=batch.id, vector_store_id=store.id)
    assert again.status == "completed"


def test_batch_cancel(tenant_a: Tenant) -> None:
    client = tenant_a.client
    store = client.vector_stores.create(name="cancel")
    ids = [tenant_a.upload(f"c{i}.txt", f"Cancelled batch file {i}. " * 50) for i in range(12)]
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
    cancelled = client.vector_stores.file_batches.cancel(
        batch_id=batch.id, vector_store_id=store.id
    )
    validate("VectorStoreFileBatchObject", cancelled.to_dict(mode="json"))
    final = wait_idle(client, store.id)
    counts = client.vector_stores.file_batches.retrieve(
        batch_id=batch.id, vector_store_id=store.id
    ).file_counts
    assert counts.in_progress == 0 and counts.total == 12
    assert counts.completed + counts.cancelled == 12
    if counts.cancelled:
        assert cancelled.status == "cancelled"
    # chunks exist only for completed files
    assert final.to_dict()["rixin"]["chunks"] == counts.completed


def test_unparseable_files_fail_without_blocking_others(tenant_a: Tenant) -> None:
    client = tenant_a.client
    store = client.vector_stores.create(name="bad files")
    good = tenant_a.upload("good.txt", "A perfectly good file about gardening.")
    unsupported = tenant_a.upload("blob.exe", b"MZ\x90\x00" + bytes(range(256)) * 4)
    corrupt = tenant_a.upload("broken.pdf", b"%PDF-1.7\nthis is not really a pdf")
    empty = tenant_a.upload("empty.txt", b"   \n")
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[good, unsupported, corrupt, empty], poll_interval_ms=100
    )
    assert batch.file_counts.completed == 1 and batch.file_counts.failed == 3
    errors = {
        f.id: f.last_error
        for f in client.vector_stores.files.list(vector_store_id=store.id, filter="failed").data
    }
    for file_id in (unsupported, corrupt, empty):
        validate(
            "VectorStoreFileObject",
            client.vector_stores.files.retrieve(file_id=file_id, vector_store_id=store.id).to_dict(
                mode="json"
            ),
        )
    assert errors[unsupported] is not None and errors[unsupported].code == "unsupported_file"
    assert errors[corrupt] is not None and errors[corrupt].code == "invalid_file"
    assert errors[empty] is not None and errors[empty].code == "invalid_file"
    found = client.vector_stores.search(store.id, query="gardening")
    assert [item.file_id for item in found.data] == [good]


# -- search ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), sorted(QUERIES.items()))
def test_search_chinese_and_english(
    tenant_a: Tenant, corpus: dict[str, Any], query: str, expected: str
) -> None:
    data = _search(tenant_a, corpus["store"], query=query)
    assert data["search_query"] == [query]
    assert _names(corpus, data)[0] == expected
    top = data["data"][0]
    assert top["filename"] == expected and top["attributes"] == DOCS[expected][1]
    assert 0.0 <= top["score"] <= 1.0 and top["content"][0]["type"] == "text"
    scores = [item["score"] for item in data["data"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    "ranker", ["auto", "none", "default-2024-11-15", "hybrid", "dense", "bm25", "hybrid_convex"]
)
def test_rankers(tenant_a: Tenant, corpus: dict[str, Any], ranker: str) -> None:
    for query, expected in QUERIES.items():
        data = _search(tenant_a, corpus["store"], query=query, ranking_options={"ranker": ranker})
        assert _names(corpus, data)[0] == expected, (ranker, query)


def test_search_options(vs_server: RixinProcess, tenant_a: Tenant, corpus: dict[str, Any]) -> None:
    store = corpus["store"]
    one = _search(tenant_a, store, query="volcano eruption", max_num_results=1)
    assert _names(corpus, one) == ["volcano.md"]
    many = _search(tenant_a, store, query=["volcano eruption", "大熊猫"], max_num_results=10)
    assert many["search_query"] == ["volcano eruption", "大熊猫"]
    assert {"volcano.md", "panda.txt"} <= set(_names(corpus, many))
    strict = _search(
        tenant_a,
        store,
        query="volcano eruption",
        ranking_options={"ranker": "bm25", "score_threshold": 0.99},
    )
    assert _names(corpus, strict) == ["volcano.md"]

    headers = {"Authorization": f"Bearer {tenant_a.key}"}
    url = f"{vs_server.api_url}/vector_stores/{store}/search"
    for body, param in [
        ({"query": "x", "ranking_options": {"ranker": "magic"}}, "ranking_options.ranker"),
        ({"query": "x", "max_num_results": 51}, "max_num_results"),
        ({"query": "x", "filters": {"type": "like", "key": "a", "value": 1}}, "filters.type"),
        (
            {
                "query": "x",
                "filters": {"type": "and", "filters": [{"type": "in", "key": "a", "value": 3}]},
            },
            "filters.filters[0].value",
        ),
    ]:
        response = httpx.post(url, headers=headers, json=body)
        assert response.status_code == 400, body
        validate_error(response.json())
        assert response.json()["error"]["param"] == param
    response = httpx.post(
        url, headers=headers, json={"query": "x", "ranking_options": {"ranker": "hybrid_rerank"}}
    )
    assert response.status_code == 503  # no rerank model is served here


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"type": "eq", "key": "lang", "value": "zh"}, {"panda.txt", "tea.md"}),
        ({"type": "ne", "key": "lang", "value": "zh"}, {"solar.txt", "volcano.md"}),
        ({"type": "gt", "key": "year", "value": 2020}, {"volcano.md", "tea.md"}),
        ({"type": "gte", "key": "year", "value": 2020}, {"volcano.md", "tea.md", "panda.txt"}),
        ({"type": "lt", "key": "year", "value": 2020}, {"solar.txt"}),
        ({"type": "lte", "key": "year", "value": 2020}, {"solar.txt", "panda.txt"}),
        ({"type": "eq", "key": "reviewed", "value": True}, {"solar.txt", "panda.txt"}),
        ({"type": "in", "key": "topic", "value": ["food", "energy"]}, {"tea.md", "solar.txt"}),
        ({"type": "nin", "key": "topic", "value": ["food", "energy"]}, {"volcano.md", "panda.txt"}),
        (
            {
                "type": "and",
                "filters": [
                    {"type": "eq", "key": "lang", "value": "en"},
                    {"type": "gte", "key": "year", "value": 2020},
                ],
            },
            {"volcano.md"},
        ),
        (
            {
                "type": "or",
                "filters": [
                    {"type": "eq", "key": "topic", "value": "food"},
                    {
                        "type": "and",
                        "filters": [
                            {"type": "eq", "key": "lang", "value": "en"},
                            {"type": "eq", "key": "reviewed", "value": True},
                        ],
                    },
                ],
            },
            {"tea.md", "solar.txt"},
        ),
        ({"type": "eq", "key": "missing", "value": 1}, set()),
    ],
)
def test_filters(
    tenant_a: Tenant, corpus: dict[str, Any], flt: dict[str, Any], expected: set[str]
) -> None:
    data = _search(
        tenant_a, corpus["store"], query="熊猫 volcano tea solar", filters=flt, max_num_results=50
    )
    assert set(_names(corpus, data)) == expected
