"""The dense (vector) index of one vector store, persisted under a directory.

It is derived data: the store keeps every chunk's embedding, and ``rebuild`` recreates the index
from (chunk id, vector) pairs whenever ``open`` finds it missing, damaged or of other dimensions
(``stale``). Layout of the directory:

    meta.json     format, dims, metric, and the chunk id of every slot (null: removed)
    vectors.npy   float32 (slots, dims), row i the vector of slot i
    hnsw.usearch  the usearch HNSW graph over the live slots (only above ``flat_limit``)

A save writes a sibling ``<dir>.tmp`` and swaps it in, so a crash leaves the old index or none
(which ``open`` reports as stale), never a mix.

Search is exact (one matrix-vector product) below ``flat_limit`` live vectors (20k by default;
~25 ms at 100k×384 is where exact stops being cheap) and HNSW above. ``allowed_ids`` restricts a
search: exact over the allowed vectors when they are few, otherwise HNSW over-fetching and
filtering, with exact search as the fallback when filtering leaves fewer than ``k``.

Scores are inner products of unit vectors for ``metric="cos"`` (the cosine, in [-1, 1]) and raw
inner products for ``metric="ip"``. Chunk ids map to integer slots (the graph's keys); removed
slots are not reused until a save compacts them away. The class is synchronous and serialises
its calls on one lock: the API layer calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Metric = Literal["cos", "ip"]
FLAT_LIMIT = 20_000
FORMAT = 1
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 64
"""HNSW M, ef_construction and ef_search (see ``bench/search_latency.py`` for their figures)."""

Vectors = npt.NDArray[np.float32]


def _new_graph(dims: int) -> Any:
    from usearch.index import Index

    return Index(
        ndim=dims,
        metric="ip",
        dtype="f32",
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )


class DenseIndex:
    """Nearest-neighbour search over the chunk vectors of one vector store."""

    def __init__(
        self,
        directory: str | Path,
        dims: int,
        metric: Metric = "cos",
        *,
        flat_limit: int = FLAT_LIMIT,
        threads: int = 1,
    ) -> None:
        if metric not in ("cos", "ip"):
            raise ValueError(f"metric must be 'cos' or 'ip', not {metric!r}")
        self.directory = Path(directory)
        self.dims = dims
        self.metric: Metric = metric
        self.flat_limit = flat_limit
        self.threads = threads
        self.stale = False
        """True when ``open`` found no usable index: the caller should ``rebuild`` it."""
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._vectors: Vectors = np.empty((0, self.dims), dtype=np.float32)
        self._ids: list[str | None] = []
        self._slots: dict[str, int] = {}
        self._live: npt.NDArray[np.bool_] = np.empty(0, dtype=np.bool_)
        self._graph: Any = None

    # ----------------------------------------------------------------------------- lifecycle

    @classmethod
    def open(
        cls,
        directory: str | Path,
        dims: int,
        metric: Metric = "cos",
        *,
        flat_limit: int = FLAT_LIMIT,
        threads: int = 1,
    ) -> DenseIndex:
        """The index saved under ``directory``; empty and ``stale`` if missing or unusable."""
        index = cls(directory, dims, metric, flat_limit=flat_limit, threads=threads)
        index.stale = not index._load()
        return index

    def _load(self) -> bool:
        meta_path = self.directory / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if (meta.get("format"), meta.get("dims"), meta.get("metric")) != (
                FORMAT,
                self.dims,
                self.metric,
            ):
                return False
            ids: list[str | None] = list(meta["ids"])
            vectors = np.load(self.directory / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if vectors.dtype != np.float32 or vectors.shape != (len(ids), self.dims):
            return False
        self._vectors, self._ids = vectors, ids
        self._slots = {chunk_id: slot for slot, chunk_id in enumerate(ids) if chunk_id is not None}
        self._live = np.array([chunk_id is not None for chunk_id in ids], dtype=np.bool_)
        graph_path = self.directory / "hnsw.usearch"
        if graph_path.exists():
            graph = _new_graph(self.dims)
            try:
                graph.load(str(graph_path))
            except (RuntimeError, ValueError, OSError):
                graph = None
            if graph is not None and len(graph) == len(self._slots):
                self._graph = graph
        return True

    def save(self) -> None:
        """Write the index (compacting removed slots away) and swap it in atomically."""
        with self._lock:
            self._compact()
            if self.mode == "hnsw":
                self._ensure_graph()  # saved with the index, so a reopen searches at once
            tmp = self.directory.with_name(self.directory.name + ".tmp")
            old = self.directory.with_name(self.directory.name + ".old")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            np.save(tmp / "vectors.npy", self._vectors, allow_pickle=False)
            if self._graph is not None:
                self._graph.save(str(tmp / "hnsw.usearch"))
            meta = {"format": FORMAT, "dims": self.dims, "metric": self.metric, "ids": self._ids}
            (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            shutil.rmtree(old, ignore_errors=True)
            if self.directory.exists():
                os.replace(self.directory, old)
            os.replace(tmp, self.directory)
            shutil.rmtree(old, ignore_errors=True)
            self.stale = False

    def rebuild(self, pairs: Iterable[tuple[str, Sequence[float] | Vectors]]) -> None:
        """Replace the whole content with ``pairs`` and save it."""
        ids: list[str] = []
        rows: list[Any] = []
        for chunk_id, vector in pairs:
            ids.append(chunk_id)
            rows.append(vector)
        matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dims)
        with self._lock:
            self._reset()
            self.add(ids, matrix)
            self.save()

    # ---------------------------------------------------------------------------- mutations

    @property
    def count(self) -> int:
        return len(self._slots)

    @property
    def mode(self) -> str:
        return "hnsw" if self.count >= self.flat_limit else "flat"

    def _prepare(self, vectors: Any) -> Vectors:
        matrix = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
        if matrix.ndim != 2 or matrix.shape[1] != self.dims:
            raise ValueError(f"vectors must have {self.dims} dimensions, got {matrix.shape}")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("vectors must be finite")
        if self.metric == "cos":
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix /= np.where(norms == 0.0, 1.0, norms)
        return matrix

    def add(self, ids: Sequence[str], vectors: Any) -> None:
        """Add vectors under ``ids``; an id already present is replaced."""
        matrix = self._prepare(vectors)
        if len(ids) != len(matrix):
            raise ValueError(f"{len(ids)} ids for {len(matrix)} vectors")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be distinct")
        with self._lock:
            self.remove(ids)
            first = len(self._ids)
            self._vectors = np.concatenate([self._vectors, matrix])
            self._ids.extend(ids)
            self._live = np.concatenate([self._live, np.ones(len(ids), dtype=np.bool_)])
            self._slots.update((chunk_id, first + i) for i, chunk_id in enumerate(ids))
            if self._graph is not None and len(ids):
                keys = np.arange(first, first + len(ids), dtype=np.uint64)
                self._graph.add(keys, matrix, threads=self.threads)

    def remove(self, ids: Iterable[str]) -> None:
        with self._lock:
            removed = [self._slots.pop(chunk_id) for chunk_id in ids if chunk_id in self._slots]
            for slot in removed:
                self._ids[slot] = None
            self._live[removed] = False
            if self._graph is not None and removed:
                self._graph.remove(np.asarray(removed, dtype=np.uint64))

    def _compact(self) -> None:
        live = [slot for slot, chunk_id in enumerate(self._ids) if chunk_id is not None]
        if len(live) == len(self._ids):
            return
        self._vectors = self._vectors[live]
        self._ids = [self._ids[slot] for slot in live]
        self._slots = {chunk_id: i for i, chunk_id in enumerate(self._ids) if chunk_id is not None}
        self._live = np.ones(len(self._ids), dtype=np.bool_)
        self._graph = None  # keys changed; rebuilt on the next HNSW search

    def _ensure_graph(self) -> Any:
        if self._graph is None:
            graph = _new_graph(self.dims)
            slots = np.fromiter(self._slots.values(), dtype=np.uint64, count=len(self._slots))
            if len(slots):
                graph.add(slots, self._vectors[slots.astype(np.intp)], threads=self.threads)
            self._graph = graph
        return self._graph

    # ------------------------------------------------------------------------------- search

    def search(
        self, vector: Any, k: int, allowed_ids: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, similarity) pairs, most similar first."""
        query = self._prepare(vector)[0]
        with self._lock:
            if k <= 0 or not self._slots:
                return []
            if allowed_ids is not None:
                slots = [self._slots[i] for i in allowed_ids if i in self._slots]
                if self.mode == "flat" or len(slots) <= max(self.flat_limit // 4, k):
                    return self._exact(query, k, np.asarray(slots, dtype=np.intp))
                return self._filtered(query, k, set(slots))
            if self.mode == "flat":
                return self._exact_all(query, k)
            return self._approximate(query, k)

    def _exact_all(self, query: Vectors, k: int) -> list[tuple[str, float]]:
        sims = self._vectors @ query
        sims[~self._live] = -np.inf
        return self._top(sims, np.arange(len(sims), dtype=np.intp), min(k, self.count))

    def _exact(
        self, query: Vectors, k: int, slots: npt.NDArray[np.intp]
    ) -> list[tuple[str, float]]:
        if not len(slots):
            return []
        return self._top(self._vectors[slots] @ query, slots, min(k, len(slots)))

    def _top(self, sims: Vectors, slots: npt.NDArray[np.intp], k: int) -> list[tuple[str, float]]:
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.lexsort((slots[top], -sims[top]))]
        return [(self._id(int(slots[i])), float(sims[i])) for i in top]

    def _approximate(self, query: Vectors, k: int) -> list[tuple[str, float]]:
        matches = self._ensure_graph().search(query, min(k, self.count), threads=1)
        return [
            (self._id(int(key)), 1.0 - float(distance))
            for key, distance in zip(matches.keys, matches.distances, strict=True)
        ]

    def _filtered(self, query: Vectors, k: int, allowed: set[int]) -> list[tuple[str, float]]:
        # Over-fetch in proportion to how much the filter removes; fall back to exact search.
        share = len(allowed) / len(self._slots)
        graph = self._ensure_graph()
        fetch = min(len(self._slots), max(k, math.ceil(2 * k / share)))
        matches = graph.search(query, fetch, threads=1)
        hits = [
            (self._id(int(key)), 1.0 - float(distance))
            for key, distance in zip(matches.keys, matches.distances, strict=True)
            if int(key) in allowed
        ]
        if len(hits) >= k:
            return hits[:k]
        return self._exact(query, k, np.fromiter(allowed, dtype=np.intp, count=len(allowed)))

    def _id(self, slot: int) -> str:
        chunk_id = self._ids[slot]
        assert chunk_id is not None
        return chunk_id
