"""Tenant isolation: A1 (BOLA incl. attach-by-reference) and A2 (retrieval canaries)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from harness import RixinProcess
from openapi_spec import validate_error
from vector_stores.support import Tenant, wait_idle

CANARY = "CANARY-7f3a9c-龙井-OMEGA"


@pytest.fixture(scope="module")
def a_objects(tenant_a: Tenant) -> dict[str, str]:
    """Tenant A's store, file, attached file and batch."""
    client = tenant_a.client
    file_id = tenant_a.upload("secret.txt", f"Tenant A's secret launch code is {CANARY}.")
    store = client.vector_stores.create(name="A private", file_ids=[file_id])
    other = tenant_a.upload("other.txt", f"A second private note mentioning {CANARY}.")
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[other])
    wait_idle(client, store.id)
    return {"store": store.id, "file": file_id, "batch": batch.id}


def _calls(vs: str, file: str, batch: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    base = f"/vector_stores/{vs}"
    return [
        ("GET", base, None),
        ("POST", base, {"name": "hijacked"}),
        ("POST", f"{base}/search", {"query": "launch code"}),
        ("GET", f"{base}/files", None),
        ("POST", f"{base}/files", {"file_id": file}),
        ("GET", f"{base}/files/{file}", None),
        ("POST", f"{base}/files/{file}", {"attributes": {"x": 1}}),
        ("GET", f"{base}/files/{file}/content", None),
        ("POST", f"{base}/file_batches", {"file_ids": [file]}),
        ("GET", f"{base}/file_batches/{batch}", None),
        ("GET", f"{base}/file_batches/{batch}/files", None),
        ("POST", f"{base}/file_batches/{batch}/cancel", None),
        ("DELETE", f"{base}/files/{file}", None),
        ("DELETE", base, None),
    ]


def test_a1_other_tenant_gets_404_everywhere(
    vs_server: RixinProcess, tenant_a: Tenant, tenant_b: Tenant, a_objects: dict[str, str]
) -> None:
    b_headers = {"Authorization": f"Bearer {tenant_b.key}"}
    b_file = tenant_b.upload("mine.txt", "Tenant B's own file.")
    b_store = tenant_b.client.vector_stores.create(name="B store").id
    cells = _calls(a_objects["store"], a_objects["file"], a_objects["batch"])
    # B references A's objects from inside B's own store and bodies (attach by reference)
    cells += [
        ("POST", "/vector_stores", {"file_ids": [a_objects["file"]]}),
        ("POST", f"/vector_stores/{b_store}/files", {"file_id": a_objects["file"]}),
        (
            "POST",
            f"/vector_stores/{b_store}/file_batches",
            {"file_ids": [b_file, a_objects["file"]]},
        ),
        (
            "POST",
            f"/vector_stores/{b_store}/file_batches",
            {"files": [{"file_id": a_objects["file"]}]},
        ),
        ("GET", f"/vector_stores/{b_store}/files/{a_objects['file']}", None),
        ("GET", f"/vector_stores/{b_store}/file_batches/{a_objects['batch']}", None),
        ("POST", f"/vector_stores/{b_store}/file_batches/{a_objects['batch']}/cancel", None),
        ("POST", f"/vector_stores/{a_objects['store']}/files", {"file_id": b_file}),
    ]
    failures = []
    for method, path, body in cells:
        response = httpx.request(
            method, vs_server.api_url + path, headers=b_headers, json=body, timeout=30
        )
        if response.status_code != 404:
            failures.append((method, path, response.status_code))
            continue
        validate_error(response.json())
        assert CANARY not in response.text
    assert failures == []

    listed = tenant_b.client.vector_stores.list(limit=100)
    assert a_objects["store"] not in {s.id for s in listed.data}
    assert tenant_b.client.vector_stores.retrieve(b_store).file_counts.total == 0
    # nothing of A's changed
    a_store = tenant_a.client.vector_stores.retrieve(a_objects["store"])
    assert (a_store.name, a_store.file_counts.completed, a_store.file_counts.total) == (
        "A private",
        2,
        2,
    )
    found = tenant_a.client.vector_stores.search(a_objects["store"], query="launch code")
    assert CANARY in found.data[0].content[0].text


@pytest.mark.parametrize("ranker", ["auto", "dense", "bm25", "hybrid_convex"])
def test_a2_no_canary_in_other_tenants_results(
    tenant_a: Tenant, tenant_b: Tenant, a_objects: dict[str, str], ranker: str
) -> None:
    client_b = tenant_b.client
    store = client_b.vector_stores.create(
        name="B similar",
        file_ids=[
            tenant_b.upload("b1.txt", "Tenant B keeps a launch checklist for its rockets."),
            tenant_b.upload("b2.txt", "龙井茶的秘密在于炒制工艺。"),
        ],
    )
    wait_idle(client_b, store.id)
    seen: list[str] = []
    for query in (CANARY, "secret launch code", "Tenant A's secret launch code", "龙井 OMEGA"):
        page = client_b.vector_stores.search(
            store.id, query=query, max_num_results=50, ranking_options={"ranker": ranker}
        )
        seen.extend(item.content[0].text for item in page.data)
        seen.extend(item.file_id for item in page.data)
    assert seen, "B's own store must still answer"
    assert not [text for text in seen if CANARY in text or a_objects["file"] in text]


def test_deleting_a_file_detaches_it_everywhere(tenant_a: Tenant) -> None:
    client = tenant_a.client
    file_id = tenant_a.upload("gone.txt", "This file will be deleted from the Files API.")
    store = client.vector_stores.create(name="detach", file_ids=[file_id])
    wait_idle(client, store.id)
    client.files.delete(file_id)
    after = client.vector_stores.retrieve(store.id)
    assert after.file_counts.total == 0 and after.to_dict()["rixin"]["chunks"] == 0
    assert client.vector_stores.search(store.id, query="deleted from the Files API").data == []
