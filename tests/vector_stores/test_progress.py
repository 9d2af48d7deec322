"""Ingestion progress in the API: an ``in_progress`` file says how far its ingestion got."""

from __future__ import annotations

import time

from harness import RixinProcess
from openapi_spec import validate
from vector_stores.support import Tenant


def test_an_in_progress_file_reports_its_stage_and_chunks(
    vs_server: RixinProcess, tenant_a: Tenant
) -> None:
    paragraphs = [
        f"Section {i}. The lighthouse keeper logged ship number {i} passing the northern reef."
        for i in range(400)
    ]
    file_id = tenant_a.upload("logbook.txt", "\n\n".join(paragraphs))
    store = tenant_a.client.vector_stores.create(
        name="progress",
        extra_body={"chunking_strategy": {"type": "static", "static": {
            "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}},
    )  # fmt: skip
    tenant_a.client.vector_stores.files.create(vector_store_id=store.id, file_id=file_id)
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = tenant_a.client.vector_stores.files.retrieve(
            file_id, vector_store_id=store.id
        ).to_dict()
        validate("VectorStoreFileObject", body)
        if body["status"] != "in_progress":
            break
        seen.append(body["rixin"]["progress"])
        time.sleep(0.05)
    assert body["status"] == "completed"
    assert (body.get("rixin") or {}).get("progress") is None  # only while in progress
    stages = [p["stage"] for p in seen]
    assert stages and set(stages) <= {"queued", "parsing", "embedding", "writing"}
    embedding = [p for p in seen if p["stage"] == "embedding"]
    assert embedding, stages  # hundreds of chunks take more than one poll to embed
    assert all(0 <= p["done"] < p["total"] for p in embedding)  # type: ignore[operator]
    listed = tenant_a.client.vector_stores.files.list(vector_store_id=store.id).to_dict()
    assert listed["data"][0]["status"] == "completed"
