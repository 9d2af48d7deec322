"""The retrieval indexes of each vector store, kept in step with the chunks table.

Each store has a directory ``<data_dir>/index/<vector_store_id>/``::

    sparse.db       BM25 over the chunk texts (``SparseIndex``: tokens in SQLite, numpy postings)
    dense/          the chunk embeddings (``DenseIndex``, flat or HNSW)
    manifest.json   the ``chunks_version`` the two reflect and the chunk ids they hold

All of it is derived data. The chunks table is the truth and ``vector_stores.chunks_version``
moves whenever it changes; ``StoreIndexes.open`` compares the manifest's version with the
store's and, when they differ, applies the difference (chunks added since, chunks gone since).
A missing or damaged directory (a manifest that does not match the index files) is rebuilt from
scratch. Catching up is idempotent, so a crash at any point — between the commit of new chunks
and the index update, or half-way through one — is repaired by the next ``open``.

The manifest is written last, atomically; it never claims more than the index files hold.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from rixin.knowledge.index.dense import DenseIndex
from rixin.knowledge.index.sparse import SparseIndex
from rixin.store.db import Database
from rixin.store.records_vectors import ChunkRecord, VectorStoreRecord

log = logging.getLogger("rixin.knowledge.store_index")

MANIFEST_FORMAT = 1
FETCH_BATCH = 500
MAX_OPEN = 64
"""Open stores kept in memory; the least recently used is closed past this."""
REFRESH_GAP_FACTOR = 4.0
"""A background refresh that took t seconds is followed by the next no sooner than this × t
later, so refreshing (which re-reads the store's chunk ids and re-saves the dense index: work
that grows with the store) takes at most a fifth of a core while a large store ingests."""

_STORE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def decode_vector(data: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    """An embedding as stored in ``chunks.embedding`` (float32, little-endian)."""
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def encode_vector(vector: Any) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


@dataclass
class StoreIndex:
    """The open indexes of one vector store."""

    directory: Path
    sparse: SparseIndex
    dense: DenseIndex | None
    version: int = -1
    ids: set[str] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def count(self) -> int:
        return len(self.ids)

    def close(self) -> None:
        self.sparse.close()


class StoreIndexes:
    """Opens, catches up and drops the per-store indexes under ``root``."""

    def __init__(self, root: Path, db: Database, *, flat_limit: int | None = None) -> None:
        self.root = root
        self.db = db
        self.flat_limit = flat_limit
        self._open: OrderedDict[str, StoreIndex] = OrderedDict()
        self._guard = asyncio.Lock()
        self._refreshing: dict[str, bool] = {}
        """Stores with a background refresh running → whether another was asked for since."""
        self._tasks: set[asyncio.Task[None]] = set()

    def directory(self, vector_store_id: str) -> Path:
        if not _STORE_ID.match(vector_store_id):
            raise ValueError("not a vector store id")
        return self.root / vector_store_id

    async def open(self, vector_store_id: str, version: int | None = None) -> StoreIndex:
        """The store's indexes, caught up with its chunks (``version``: the caller's reading
        of ``chunks_version``; when it matches the loaded index nothing is read)."""
        index = await self._get(vector_store_id)
        if version is not None and index.version == version:
            return index
        async with index.lock:
            await self._catch_up(vector_store_id, index)
        return index

    async def refresh(self, vector_store_id: str) -> StoreIndex:
        """Catch up unconditionally (after a search met chunks that are gone)."""
        return await self.open(vector_store_id, None)

    def refresh_soon(self, vector_store_id: str) -> None:
        """Catch the store's index up in the background, coalescing bursts: while a refresh
        runs (and for ``REFRESH_GAP_FACTOR`` times as long after it), any number of further
        requests cause exactly one more. Ingestion calls this after
        every file; a refresh re-reads the store's chunk ids and re-saves the dense index, so one
        per file made ingesting a large store quadratic. Searches never wait for it: ``open``
        catches up by itself when the version moved."""
        if vector_store_id in self._refreshing:
            self._refreshing[vector_store_id] = True  # run once more when the current one ends
            return
        self._refreshing[vector_store_id] = False
        task = asyncio.create_task(self._refresh_loop(vector_store_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_loop(self, vector_store_id: str) -> None:
        try:
            while True:
                self._refreshing[vector_store_id] = False
                started = time.perf_counter()
                try:
                    await self.refresh(vector_store_id)
                except Exception:  # derived data: the next open repairs it
                    log.exception(
                        "index of %s not updated; it catches up on next use", vector_store_id
                    )
                if not self._refreshing[vector_store_id]:
                    return
                await asyncio.sleep(REFRESH_GAP_FACTOR * (time.perf_counter() - started))
        finally:
            del self._refreshing[vector_store_id]

    async def settle(self) -> None:
        """Wait for the background refreshes (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def drop(self, vector_store_id: str) -> None:
        """Forget and delete a store's indexes (the store was deleted)."""
        async with self._guard:
            index = self._open.pop(vector_store_id, None)
        if index is not None:
            async with index.lock:
                index.close()
        await asyncio.to_thread(shutil.rmtree, self.directory(vector_store_id), True)

    def close(self) -> None:
        for index in self._open.values():
            index.close()
        self._open.clear()

    # ------------------------------------------------------------------------------- opening

    async def _get(self, vector_store_id: str) -> StoreIndex:
        async with self._guard:
            index = self._open.get(vector_store_id)
            if index is not None:
                self._open.move_to_end(vector_store_id)
                return index
            index = await asyncio.to_thread(self._load, self.directory(vector_store_id))
            self._open[vector_store_id] = index
            while len(self._open) > MAX_OPEN:
                # Not closed here: a search may still hold it; its connection closes with it.
                self._open.popitem(last=False)
            return index

    def _load(self, directory: Path) -> StoreIndex:
        directory.mkdir(parents=True, exist_ok=True)
        manifest = _read_manifest(directory / "manifest.json")
        sparse = SparseIndex(directory / "sparse.db")
        dims = manifest.get("dims") if manifest else None
        dense = self._dense(directory, dims) if isinstance(dims, int) else None
        ids = set(manifest["ids"]) if manifest else set()
        consistent = (
            manifest is not None
            and sparse.count == len(ids)
            and (dense is None or (not dense.stale and dense.count == len(ids)))
            and (dense is not None or not ids)
        )
        if not consistent:
            if manifest is not None:
                log.warning("index of %s is inconsistent; rebuilding it", directory.name)
            sparse.clear()
            if dense is not None:
                dense.rebuild([])
            return StoreIndex(directory, sparse, dense)
        return StoreIndex(directory, sparse, dense, int(manifest["version"]), ids)  # type: ignore[index]

    def _dense(self, directory: Path, dims: int) -> DenseIndex:
        kwargs: dict[str, Any] = {}
        if self.flat_limit is not None:
            kwargs["flat_limit"] = self.flat_limit
        return DenseIndex.open(directory / "dense", dims, "cos", **kwargs)

    # ----------------------------------------------------------------------------- catching up

    async def _catch_up(self, vector_store_id: str, index: StoreIndex) -> None:
        # The version is read before the ids: the manifest may then under-state the version
        # (and the next open applies the difference again, harmlessly), never over-state it.
        async with self.db.session(readonly=True) as session:
            version = await session.scalar(
                select(VectorStoreRecord.chunks_version).where(
                    VectorStoreRecord.id == vector_store_id
                )
            )
            if version is None:
                return
            if version == index.version:
                return
            current = set(
                await session.scalars(
                    select(ChunkRecord.id).where(ChunkRecord.vector_store_id == vector_store_id)
                )
            )
            added = sorted(current - index.ids)
            rows = await _fetch(session, added)
        removed = index.ids - current
        await asyncio.to_thread(self._apply, index, rows, removed, current, int(version))
        log.info(
            "index of %s at version %d: +%d -%d chunks",
            vector_store_id,
            version,
            len(rows),
            len(removed),
        )

    def _apply(
        self,
        index: StoreIndex,
        rows: Sequence[tuple[str, str, bytes]],
        removed: set[str],
        current: set[str],
        version: int,
    ) -> None:
        if removed:
            index.sparse.delete(removed)
            if index.dense is not None:
                index.dense.remove(removed)
        if rows:
            index.sparse.add_many((chunk_id, text) for chunk_id, text, _ in rows)
            vectors = np.stack([decode_vector(blob) for _, _, blob in rows])
            if index.dense is None:
                index.dense = self._dense(index.directory, int(vectors.shape[1]))
                index.dense.rebuild([])
            index.dense.add([chunk_id for chunk_id, _, _ in rows], vectors)
        if index.dense is not None and (rows or removed):
            index.dense.save()
        index.ids = set(current)
        index.version = version
        dims = index.dense.dims if index.dense is not None else None
        _write_manifest(index.directory / "manifest.json", version, dims, index.ids)


async def _fetch(session: Any, ids: Sequence[str]) -> list[tuple[str, str, bytes]]:
    rows: list[tuple[str, str, bytes]] = []
    for start in range(0, len(ids), FETCH_BATCH):
        batch = ids[start : start + FETCH_BATCH]
        result = await session.execute(
            select(ChunkRecord.id, ChunkRecord.text, ChunkRecord.embedding).where(
                ChunkRecord.id.in_(batch)
            )
        )
        rows.extend((str(i), str(t), bytes(e)) for i, t, e in result)
    return rows


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return None
    if not isinstance(data.get("version"), int) or not isinstance(data.get("ids"), list):
        return None
    return data


def _write_manifest(path: Path, version: int, dims: int | None, ids: Iterable[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    body = {"format": MANIFEST_FORMAT, "version": version, "dims": dims, "ids": sorted(ids)}
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
