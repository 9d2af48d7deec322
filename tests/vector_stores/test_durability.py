"""Ingestion survives crashes (D3), re-ingestion is idempotent, and indexes are derived data."""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from harness import RixinProcess
from vector_stores.corpus import generated
from vector_stores.support import MODELS, Tenant, make_tenant, query_db, wait_idle

ORPHANS = """
    SELECT count(*) FROM chunks AS c
    LEFT JOIN vector_store_files AS f
      ON f.vector_store_id = c.vector_store_id AND f.file_id = c.file_id
    WHERE f.file_id IS NULL OR f.status != 'completed'
"""


def _chunk_counts(data_dir: Path, store: str) -> dict[str, int]:
    rows = query_db(
        data_dir,
        "SELECT file_id, count(*), max(ordinal) FROM chunks WHERE vector_store_id = ? "
        "GROUP BY file_id",
        store,
    )
    for file_id, count, last in rows:
        assert last == count - 1, f"{file_id}: ordinals are not 0..{count - 1}"
    return {file_id: count for file_id, count, _ in rows}


def _manifest_ids(data_dir: Path, store: str) -> set[str]:
    manifest = json.loads((data_dir / "index" / store / "manifest.json").read_text())
    return set(manifest["ids"])


def test_reingest_is_idempotent(vs_server: RixinProcess, tenant_a: Tenant) -> None:
    client = tenant_a.client
    ids = [tenant_a.upload(*generated(i)) for i in range(3)]
    small = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    store = client.vector_stores.create(name="reingest", file_ids=ids, chunking_strategy=small)
    wait_idle(client, store.id)
    before = _chunk_counts(vs_server.data_dir, store.id)
    assert set(before) == set(ids) and all(n >= 2 for n in before.values())

    # attach again, alone and in a batch: the chunks are replaced, never duplicated
    client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=ids[0], chunking_strategy=small, poll_interval_ms=100
    )
    client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=ids, chunking_strategy=small, poll_interval_ms=100
    )
    assert _chunk_counts(vs_server.data_dir, store.id) == before
    assert client.vector_stores.retrieve(store.id).file_counts.total == 3
    page = client.vector_stores.search(store.id, query="[1-3]", max_num_results=50)
    texts = [item.content[0].text for item in page.data]
    assert len(texts) == len(set(texts)), "a chunk came back twice"
    assert _manifest_ids(vs_server.data_dir, store.id) == {
        row[0]
        for row in query_db(
            vs_server.data_dir, "SELECT id FROM chunks WHERE vector_store_id = ?", store.id
        )
    }


def test_index_is_rebuilt_when_missing(tmp_path: Path) -> None:
    server = RixinProcess(tmp_path / "data", models=MODELS)
    server.start(timeout_s=120)
    try:
        tenant = make_tenant(server, "rebuild")
        ids = [tenant.upload(*generated(i)) for i in range(4)]
        store = tenant.client.vector_stores.create(name="rebuild", file_ids=ids)
        wait_idle(tenant.client, store.id)
        query = "railway line connect cities [2-5]"
        expected = tenant.client.vector_stores.search(store.id, query=query).to_dict()
        bm25 = {"ranker": "bm25"}
        sparse = tenant.client.vector_stores.search(store.id, query=query, ranking_options=bm25)
        server.stop()
        shutil.rmtree(server.data_dir / "index")
        server.start(timeout_s=120)
        again = tenant.client.vector_stores.search(store.id, query=query).to_dict()
        assert again["data"] == expected["data"]
        chunk_ids = query_db(server.data_dir, "SELECT id FROM chunks")
        assert _manifest_ids(server.data_dir, store.id) == {row[0] for row in chunk_ids}
        # a damaged index (BM25 file gone, manifest left) is rebuilt as well
        server.stop()
        (server.data_dir / "index" / store.id / "sparse.db").unlink()
        server.start(timeout_s=120)
        damaged = tenant.client.vector_stores.search(store.id, query=query, ranking_options=bm25)
        assert damaged.data and damaged.to_dict()["data"] == sparse.to_dict()["data"]
    finally:
        server.stop()


def _kill_loop(tmp_path: Path, rounds: int, per_round: int, seed: int) -> None:
    """D3: attach documents, SIGKILL the server mid-ingestion, restart; repeat; then check."""
    rng = random.Random(seed)
    server = RixinProcess(tmp_path / "data", models=MODELS)
    server.start(timeout_s=120)
    try:
        tenant = make_tenant(server, "d3")
        store = tenant.client.vector_stores.create(name="d3").id
        acknowledged: list[str] = []
        for r in range(rounds):
            ids = [tenant.upload(*generated(r * per_round + i)) for i in range(per_round)]
            tenant.client.vector_stores.file_batches.create(vector_store_id=store, file_ids=ids)
            acknowledged.extend(ids)  # the batch was acknowledged: these must all end somewhere
            time.sleep(rng.uniform(0.05, 0.8))
            server.stop(signal.SIGKILL)
            server.start(timeout_s=120)
        final = wait_idle(tenant.client, store, timeout_s=180)
        _check_after_crashes(server, tenant, store, acknowledged, final)
    finally:
        server.stop()


def _check_after_crashes(
    server: RixinProcess, tenant: Tenant, store: str, acknowledged: list[str], final: Any
) -> None:
    client = tenant.client
    statuses = {
        f.id: f.status for f in client.vector_stores.files.list(vector_store_id=store, limit=100)
    }
    assert set(statuses) == set(acknowledged)
    assert set(statuses.values()) <= {"completed", "failed"}, statuses
    assert final.file_counts.completed + final.file_counts.failed == len(acknowledged)
    assert query_db(server.data_dir, ORPHANS) == [(0,)]
    counts = _chunk_counts(server.data_dir, store)
    completed = [f for f, s in statuses.items() if s == "completed"]
    assert set(counts) == set(completed)
    failed = {
        f.id: f.last_error
        for f in client.vector_stores.files.list(vector_store_id=store, filter="failed", limit=100)
    }
    assert len(completed) >= len(acknowledged) - 2, failed  # failures are rare exceptions

    client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store, file_ids=completed, poll_interval_ms=200
    )
    assert _chunk_counts(server.data_dir, store) == counts  # re-ingest is idempotent
    assert query_db(server.data_dir, ORPHANS) == [(0,)]
    page = client.vector_stores.search(store, query="图书馆 examination period", max_num_results=5)
    assert page.data
    assert _manifest_ids(server.data_dir, store) == {
        row[0] for row in query_db(server.data_dir, "SELECT id FROM chunks")
    }


def test_d3_kill9_during_ingestion(tmp_path: Path) -> None:
    _kill_loop(tmp_path, rounds=5, per_round=4, seed=3)


@pytest.mark.slow
def test_d3_kill9_during_ingestion_50(tmp_path: Path) -> None:
    _kill_loop(tmp_path, rounds=50, per_round=2, seed=50)
