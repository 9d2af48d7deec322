"""Store-level guarantees on SQLite and PostgreSQL: schema, idempotent ingestion, cascades,
and the derived indexes catching up with the chunks table."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, func, select, update

from rixin.errors import Conflict, ContextLengthExceeded
from rixin.jobs.queue import Job
from rixin.jobs.worker import JobContext
from rixin.knowledge.ingest import Ingestor, job_payload
from rixin.knowledge.store_index import StoreIndexes
from rixin.store.blobs import BlobStore
from rixin.store.db import Database
from rixin.store.records import Base, ProjectRecord
from rixin.store.records_files import FileRecord
from rixin.store.records_vectors import (
    ChunkRecord,
    VectorStoreFileRecord,
    VectorStoreRecord,
)

TEXT = "\n\n".join(
    f"Paragraph {i} explains topic {i} in plain words. 第{i}段用中文说明主题。" for i in range(12)
)
STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}


def fake_vectors(texts: Sequence[str], dims: int = 16) -> np.ndarray[Any, Any]:
    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:dims], np.uint8) for t in texts]
    matrix = np.asarray(rows, dtype=np.float32) - 127.5
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


class FakeQueue:
    async def heartbeat(self, *args: Any, **kwargs: Any) -> bool:
        return True


def context(project: str, store: str, file: str, generation: int = 1, attempt: int = 1) -> Any:
    job = Job(
        id="job_x", project_id=project, kind="k", payload=job_payload(store, file, generation),
        state="running", attempts=attempt, max_attempts=5, run_after=0.0, lease_owner="t",
        lease_expires_at=None, idempotency_key=None, last_error=None, progress={}, result=None,
        created_at=0, updated_at=0, finished_at=None,
    )  # fmt: skip
    return JobContext(job=job, queue=FakeQueue(), owner="t", lease_s=30.0)  # type: ignore[arg-type]


async def seed(db: Database, blobs: BlobStore, text: str = TEXT) -> tuple[str, str, str]:
    """A project, a file with ``text`` and a store with the file attached (in progress)."""
    async with db.session() as s:
        s.add(ProjectRecord(id="proj_a", name="a", created_at=1))
        blob = await blobs.put(s, text.encode(), max_bytes=1 << 20)
        s.add(
            FileRecord(
                id="file-a", project_id="proj_a", filename="a.txt", purpose="assistants",
                bytes=blob.bytes, sha256=blob.sha256, created_at=1,
            )
        )  # fmt: skip
        s.add(VectorStoreRecord(id="vs_a", project_id="proj_a", embedding_model="fake"))
        await s.flush()
        s.add(
            VectorStoreFileRecord(
                vector_store_id="vs_a", file_id="file-a", project_id="proj_a",
                chunking_strategy=STATIC, generation=1,
            )
        )  # fmt: skip
    return "proj_a", "vs_a", "file-a"


async def chunk_rows(db: Database) -> list[tuple[str, int]]:
    async with db.session(readonly=True) as s:
        rows = await s.execute(select(ChunkRecord.id, ChunkRecord.ordinal))
        return [(str(i), int(o)) for i, o in rows]


@pytest.fixture
def blobs(db: Database, tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "files", db)


@pytest.fixture
def parts(db: Database, blobs: BlobStore, tmp_path: Path) -> tuple[Ingestor, StoreIndexes]:
    indexes = StoreIndexes(tmp_path / "index", db)

    async def embed(model: str, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        return fake_vectors(texts)

    return Ingestor(db, blob_path=blobs.path, embed=embed, indexes=indexes), indexes


async def test_migrations_match_the_records(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
            )
        )
    assert [d for d in diff if "vector" in str(d) or "chunks" in str(d)] == []


async def test_ingestion_is_idempotent_and_indexed(
    db: Database, blobs: BlobStore, parts: tuple[Ingestor, StoreIndexes]
) -> None:
    ingest, indexes = parts
    project, store, file = await seed(db, blobs)
    assert await ingest(context(project, store, file)) == {"chunks": len(await chunk_rows(db))}
    first = await chunk_rows(db)
    assert len(first) >= 3 and sorted(o for _, o in first) == list(range(len(first)))

    # the same job again (a retry after a crash that lost the completion): same chunks
    async with db.session() as s:
        await s.execute(update(VectorStoreFileRecord).values(status="in_progress"))
    await ingest(context(project, store, file, attempt=2))
    second = await chunk_rows(db)
    assert sorted(o for _, o in second) == sorted(o for _, o in first)
    index = await indexes.open(store)
    assert index.ids == {i for i, _ in second} and index.sparse.count == len(second)
    assert index.dense is not None and index.dense.count == len(second)

    # a job of an older generation never writes
    async with db.session() as s:
        await s.execute(update(VectorStoreFileRecord).values(status="in_progress", generation=2))
    assert await ingest(context(project, store, file, generation=1)) == {"skipped": "superseded"}
    assert await chunk_rows(db) == second

    # a file that is no longer there: cascades remove its store row and chunks
    async with db.session() as s:
        await s.execute(delete(FileRecord).where(FileRecord.id == file))
    assert await chunk_rows(db) == []
    async with db.session(readonly=True) as s:
        assert await s.scalar(select(func.count()).select_from(VectorStoreFileRecord)) == 0


async def test_chunk_positions_are_unique(db: Database, blobs: BlobStore) -> None:
    project, store, file = await seed(db, blobs)
    row = {
        "project_id": project, "vector_store_id": store, "file_id": file, "ordinal": 0,
        "text": "t", "token_count": 1, "char_start": 0, "char_end": 1,
        "embedding": b"\0" * 64, "embedding_model": "fake", "heading_path": [],
    }  # fmt: skip
    with pytest.raises(Conflict):
        async with db.session() as s:
            s.add_all([ChunkRecord(id="chunk_1", **row), ChunkRecord(id="chunk_2", **row)])


async def test_index_catches_up_and_rebuilds(
    db: Database, blobs: BlobStore, parts: tuple[Ingestor, StoreIndexes], tmp_path: Path
) -> None:
    ingest, indexes = parts
    project, store, file = await seed(db, blobs)
    await ingest(context(project, store, file))
    ids = {i for i, _ in await chunk_rows(db)}
    assert (await indexes.open(store)).ids == ids

    # a change committed without touching the index (a crash right after the commit)
    gone = sorted(ids)[0]
    async with db.session() as s:
        await s.execute(delete(ChunkRecord).where(ChunkRecord.id == gone))
        await s.execute(update(VectorStoreRecord).values(chunks_version=99))
    fresh = StoreIndexes(tmp_path / "index", db)  # as after a restart
    index = await fresh.open(store)
    assert index.ids == ids - {gone} and index.version == 99
    assert gone not in {c for c, _ in index.sparse.search("Paragraph topic", 50)}

    # the manifest lost: everything is rebuilt from the chunks table
    (tmp_path / "index" / store / "manifest.json").unlink()
    rebuilt = await StoreIndexes(tmp_path / "index", db).open(store)
    assert rebuilt.ids == ids - {gone} and rebuilt.sparse.count == len(ids) - 1
    await fresh.drop(store)
    assert not (tmp_path / "index" / store).exists()


async def test_overlong_chunks_are_embedded_in_parts(
    db: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    calls: list[int] = []

    async def small_window(model: str, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        calls.append(len(texts))
        if any(len(t) > 60 for t in texts):
            raise ContextLengthExceeded("too long", param="input")
        return fake_vectors(texts)

    indexes = StoreIndexes(tmp_path / "index", db)
    ingest = Ingestor(db, blob_path=blobs.path, embed=small_window, indexes=indexes)
    project, store, file = await seed(db, blobs)
    assert (await ingest(context(project, store, file)))["chunks"] >= 3
    async with db.session(readonly=True) as s:
        vectors = [np.frombuffer(e, "<f4") for e in await s.scalars(select(ChunkRecord.embedding))]
    assert all(abs(float(np.linalg.norm(v)) - 1.0) < 1e-5 for v in vectors)
    assert len(calls) > len(vectors)


async def test_recover_gives_every_file_an_end(
    db: Database, blobs: BlobStore, tmp_path: Path
) -> None:
    from rixin.app import engine_context
    from rixin.jobs.queue import JobQueue
    from rixin.knowledge.ingest import JOB_KIND, job_key
    from rixin.services.models import ModelManager
    from rixin.services.vector_stores import VectorStoreService
    from rixin.settings import Settings
    from rixin.store.records_files import JobRecord

    settings = Settings(data_dir=tmp_path, models=[])
    queue = JobQueue(db)
    service = VectorStoreService(
        db,
        ModelManager(settings, engine_context(settings)),
        queue,
        blobs,
        StoreIndexes(tmp_path / "index", db),
    )
    project, store, file = await seed(db, blobs)  # attached without a job (as before 0003)
    assert await service.recover() == 1
    job = await queue.find(project, JOB_KIND, job_key(store, file, 1))
    assert job is not None and job.state == "queued"
    assert await service.recover() == 0  # a live job: nothing to do

    async with db.session() as s:  # the worker was lost on the job's last attempt
        await s.execute(update(JobRecord).values(state="failed"))
    assert await service.recover() == 1
    async with db.session(readonly=True) as s:
        row = await s.get(VectorStoreFileRecord, (store, file))
        assert row is not None and row.status == "failed"
        assert row.last_error is not None and row.last_error["code"] == "server_error"
