"""BM25 over the chunks of one vector store: tokens kept in SQLite, postings scored in numpy.

Documents are tokenised by ``rixin.knowledge.index.segment`` (jieba for Chinese, stemmed English)
and stored space-joined in one SQLite table, the durable copy the postings are rebuilt from. The
postings live in memory and are scored with numpy: BM25 with Lucene's idf
``log(1 + (N - df + 0.5) / (df + 0.5))`` (always positive), k1 = 0.9, b = 0.75. Measured on the
full sets (``bench/retrieval_quality.py``), k1 0.9 / 1.2 / 1.5 gave hybrid nDCG@10 0.7160 / 0.7096 /
0.7090 on SciFact and 0.7781 / 0.7749 / 0.7717 on RGB zh; b 0.4 was worse on both.

Why not FTS5's ``bm25()``, the first design: it scores every document matching any query term
before it sorts, and a query holding a common word then walks most of the corpus. On 100k
synthetic chunks (``bench/search_latency.py --part rixin``) a query took ~300 ms p50 through
FTS5; the same query over numpy postings takes a few milliseconds, since scoring a posting list
is one vectorised expression rather than a virtual-table row per match.

The postings are an append-only log of (term, row, tf), rows being the table's AUTOINCREMENT
rowids, never reused: a sorted part (CSR by term, then row) and a per-term tail that new chunks
go to. Deleting a chunk only marks its row dead; dead postings are skipped at query time (``df``
counts live rows only, so scores are exact) and dropped when the tail or the dead share grows
past a quarter of the postings and the log is re-sorted.

The top ``k`` is found by MaxScore (Turtle & Flood): rare terms are scored in full, and the
common terms, whose posting lists are long but whose idf is small, are only looked up for the
rows that can still make the top ``k``. The result is exact. On synthetic chunks with Zipf
queries (``bench/search_latency.py``) it took a search from ~11.7 to 1.7 ms p50 at 100k chunks,
and from 206 to 17 ms at 1M.

A query is the set of its distinct tokens; nothing a user types is read as syntax. The class is
synchronous and serialises its calls on one lock, so the API layer may call it from worker
threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rixin.knowledge.index.segment import query_terms, tokenize

K1 = 0.9
B = 0.75
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MIN_COMPACT = 65_536
"""Postings in the tail (or dead) before a re-sort is considered; below it a scan is cheap."""

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]


def _statements(table: str) -> dict[str, str]:
    """Every statement of an index; ``table`` is a checked identifier (``_NAME``)."""
    return {
        "create": f"CREATE TABLE IF NOT EXISTS {table} "
        "(rowid INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL UNIQUE,"
        " tokens TEXT NOT NULL)",
        "count": f"SELECT count(*) FROM {table}",  # noqa: S608
        "all": f"SELECT rowid, tokens FROM {table}",  # noqa: S608
        "insert": f"INSERT INTO {table} (chunk_id, tokens) VALUES (?, ?)",  # noqa: S608
        "find": f"SELECT rowid FROM {table} WHERE chunk_id = ?",  # noqa: S608
        "delete": f"DELETE FROM {table} WHERE rowid = ?",  # noqa: S608
        "clear": f"DELETE FROM {table}",  # noqa: S608
        "rows": f"SELECT rowid FROM {table} WHERE chunk_id IN "  # noqa: S608
        "(SELECT value FROM json_each(?))",
        "chunk_ids": f"SELECT rowid, chunk_id FROM {table} WHERE rowid IN "  # noqa: S608
        "(SELECT value FROM json_each(?))",
    }


class SparseIndex:
    """BM25 search over the chunks of one vector store."""

    def __init__(
        self, conn_or_path: sqlite3.Connection | str | Path, *, name: str = "chunks"
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"sparse index name must be an SQL identifier, not {name!r}")
        if isinstance(conn_or_path, sqlite3.Connection):
            self._conn = conn_or_path
            self._owns = False
        else:
            self._conn = sqlite3.connect(conn_or_path, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._owns = True
        self._sql = _statements(f"{name}_bm25")
        self._lock = threading.RLock()
        self._postings: _Postings | None = None  # built on the first search
        with self._lock, self._conn:
            # The FTS5 tables of the first design: derived data, rebuilt into the new table.
            self._conn.execute(f"DROP TABLE IF EXISTS {name}_fts")
            self._conn.execute(f"DROP TABLE IF EXISTS {name}_ids")
            self._conn.execute(self._sql["create"])

    @property
    def count(self) -> int:
        with self._lock:
            row = self._conn.execute(self._sql["count"]).fetchone()
        return int(row[0])

    def add(self, chunk_id: str, text: str) -> None:
        """Index (or re-index) one chunk."""
        self.add_many([(chunk_id, text)])

    def add_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Index (or re-index) many chunks in one transaction."""
        rows = [(chunk_id, tokenize(text)) for chunk_id, text in items]
        with self._lock:
            with self._conn:
                self._delete(chunk_id for chunk_id, _ in rows)
                added = []
                for chunk_id, tokens in rows:
                    cursor = self._conn.execute(self._sql["insert"], (chunk_id, " ".join(tokens)))
                    added.append((int(cursor.lastrowid or 0), tokens))
            if self._postings is not None:
                for row, tokens in added:
                    self._postings.add(row, tokens)

    def delete(self, chunk_ids: Iterable[str]) -> None:
        with self._lock, self._conn:
            self._delete(chunk_ids)

    def _delete(self, chunk_ids: Iterable[str]) -> None:
        for chunk_id in chunk_ids:
            found = self._conn.execute(self._sql["find"], (chunk_id,)).fetchone()
            if found is not None:
                self._conn.execute(self._sql["delete"], found)
                if self._postings is not None:
                    self._postings.remove(int(found[0]))

    def search(
        self, query: str, k: int, allowed_ids: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, BM25 score) pairs, best first; only ``allowed_ids`` if given."""
        terms = query_terms(query)
        if not terms or k <= 0 or (allowed_ids is not None and not allowed_ids):
            return []
        with self._lock:
            allowed = None
            if allowed_ids is not None:
                found = self._conn.execute(self._sql["rows"], (json.dumps(list(allowed_ids)),))
                allowed = np.fromiter((r for (r,) in found), dtype=np.int64)
                if not allowed.size:
                    return []
            top = self._loaded().top(terms, k, allowed)
            if not top:
                return []
            names = dict(
                self._conn.execute(self._sql["chunk_ids"], (json.dumps([r for r, _ in top]),))
            )
        return [(str(names[row]), score) for row, score in top if row in names]

    def clear(self) -> None:
        with self._lock, self._conn:
            self._conn.execute(self._sql["clear"])
            self._postings = None

    def close(self) -> None:
        if self._owns:
            self._conn.close()

    def _loaded(self) -> _Postings:
        if self._postings is None:
            postings = _Postings()
            for row, tokens in self._conn.execute(self._sql["all"]):
                postings.add(int(row), tokens.split())
            self._postings = postings
        return self._postings


class _Postings:
    """In-memory BM25 postings: a CSR part sorted by term, then by row, and a per-term tail.

    Rows only grow (the table's AUTOINCREMENT rowids), so each term's postings, CSR part then
    tail, are in ascending row order: ``top`` looks rows up in a posting list by bisection.
    """

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.ptr: Ints = np.zeros(1, dtype=np.int64)
        self.rows: Ints = np.zeros(0, dtype=np.int64)
        self.tfs: Floats = np.zeros(0, dtype=np.float32)
        self.tail: dict[int, tuple[list[int], list[float]]] = {}
        self.tail_size = 0
        self._tail_cache: dict[int, tuple[Ints, Floats]] = {}
        self.last_row = 0
        self.length: Floats = np.zeros(1024, dtype=np.float32)
        self.alive = np.zeros(1024, dtype=bool)
        self.live = 0
        self.total_length = 0.0
        self.dead_postings = 0
        self._acc = np.zeros(0, dtype=np.float64)  # scratch for ``top``, zero between calls
        self._seen = np.zeros(0, dtype=bool)

    def add(self, row: int, tokens: list[str]) -> None:
        if row <= self.last_row:
            raise ValueError(f"postings rows must increase: {row} after {self.last_row}")
        self.last_row = row
        if row >= len(self.alive):
            size = max(row + 1, 2 * len(self.alive))
            self.length = _grown(self.length, size)
            self.alive = _grown(self.alive, size)
        for term, tf in Counter(tokens).items():
            rows, tfs = self.tail.setdefault(self.vocab.setdefault(term, len(self.vocab)), ([], []))
            rows.append(row)
            tfs.append(float(tf))
        self.tail_size += len(set(tokens))
        self.length[row] = len(tokens)
        self.alive[row] = True
        self.live += 1
        self.total_length += len(tokens)
        if self.tail_size > max(_MIN_COMPACT, len(self.rows) // 4):
            self._compact()

    def remove(self, row: int) -> None:
        if row >= len(self.alive) or not self.alive[row]:
            return
        self.alive[row] = False
        self.live -= 1
        self.total_length -= float(self.length[row])
        self.dead_postings += 1  # a lower bound; only decides when to compact
        if self.dead_postings > max(_MIN_COMPACT // 8, self.live // 4):
            self._compact()

    def top(self, terms: list[str], k: int, allowed: Ints | None) -> list[tuple[int, float]]:
        """The best ``k`` (row, score), by MaxScore: the posting lists are taken rarest term
        first, each scored in full, until no row outside those lists can reach the ``k``-th
        best score so far (the upper bounds of the terms left sum below it); the common terms
        left are then only looked up for the rows still able to make the top ``k``. Scores and
        order are exactly those of scoring every posting."""
        if not self.live:
            return []
        lists = self._lists(terms, allowed)
        if not lists:
            return []
        # No term adds more than idf * (K1 + 1) to a score; bound[i]: what lists i.. can add.
        bound = np.cumsum([idf * (K1 + 1.0) for idf, _, _ in lists][::-1])[::-1].tolist() + [0.0]
        acc, seen = self._scratch()
        avg = self.total_length / self.live
        touched: list[Ints] = []
        try:
            floor = -math.inf  # the k-th best partial score: a lower bound of the k-th final one
            rest = len(lists)
            for i, (idf, rows, tfs) in enumerate(lists):
                acc[rows] += self._weights(idf, rows, tfs, avg)
                touched.append(rows[~seen[rows]])
                seen[touched[-1]] = True
                candidates = sum(len(t) for t in touched)
                # Pruning needs a k-th score above bound[i + 1], and none is above bound[0] -
                # bound[i + 1] yet: skip the partition when the second is not above the first.
                if candidates < k or bound[0] - bound[i + 1] <= bound[i + 1]:
                    continue
                every = np.concatenate(touched)
                floor = float(np.partition(acc[every], candidates - k)[candidates - k])
                if floor > bound[i + 1]:  # no row outside lists ..i can reach the top k
                    rest = i + 1
                    break
            every = np.concatenate(touched)
            for idf, rows, tfs in lists[rest:]:
                every = every[acc[every] + bound[rest] >= floor]
                at = np.minimum(np.searchsorted(rows, every), len(rows) - 1)
                hit = rows[at] == every
                acc[every[hit]] += self._weights(idf, every[hit], tfs[at[hit]], avg)
                rest += 1
            scores = acc[every]
        finally:
            for rows in touched:  # leave the scratch zeroed for the next call
                acc[rows] = 0.0
                seen[rows] = False
        if len(every) > k:
            best = np.argpartition(-scores, k - 1)[:k]
            every, scores = every[best], scores[best]
        order = np.lexsort((every, -scores))
        return [(int(every[n]), float(scores[n])) for n in order]

    def _lists(self, terms: list[str], allowed: Ints | None) -> list[tuple[float, Ints, Floats]]:
        """(idf, rows, tfs) of each query term present, live rows in ``allowed`` only, rarest
        term first."""
        mask = None
        if allowed is not None:
            mask = np.zeros(len(self.alive), dtype=bool)
            mask[allowed[allowed < len(self.alive)]] = True
        lists = []
        for term in terms:
            term_id = self.vocab.get(term)
            if term_id is None:
                continue
            rows, tfs = self._postings(term_id)
            if self.dead_postings:
                keep = self.alive[rows]
                rows, tfs = rows[keep], tfs[keep]
            df = len(rows)  # over the whole store: a filter changes no score
            if mask is not None:
                keep = mask[rows]
                rows, tfs = rows[keep], tfs[keep]
            if rows.size:
                lists.append((math.log(1.0 + (self.live - df + 0.5) / (df + 0.5)), rows, tfs))
        lists.sort(key=lambda item: -item[0])
        return lists

    def _weights(self, idf: float, rows: Ints, tfs: Floats, avg: float) -> npt.NDArray[np.float64]:
        norm = K1 * (1.0 - B + B * self.length[rows] / avg)
        weights: npt.NDArray[np.float64] = idf * tfs * (K1 + 1.0) / (tfs + norm)
        return weights

    def _scratch(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        if len(self._acc) != len(self.alive):
            self._acc = np.zeros(len(self.alive), dtype=np.float64)
            self._seen = np.zeros(len(self.alive), dtype=bool)
        return self._acc, self._seen

    def _postings(self, term_id: int) -> tuple[Ints, Floats]:
        rows: Ints = np.zeros(0, dtype=np.int64)
        tfs: Floats = np.zeros(0, dtype=np.float32)
        if term_id + 1 < len(self.ptr):
            start, end = int(self.ptr[term_id]), int(self.ptr[term_id + 1])
            rows, tfs = self.rows[start:end], self.tfs[start:end]
        if term_id in self.tail:
            t_rows, t_tfs = self._tail_arrays(term_id)
            rows, tfs = np.concatenate([rows, t_rows]), np.concatenate([tfs, t_tfs])
        return rows, tfs

    def _tail_arrays(self, term_id: int) -> tuple[Ints, Floats]:
        """A term's tail as arrays, kept until the term gets more postings."""
        t_rows, t_tfs = self.tail[term_id]
        cached = self._tail_cache.get(term_id)
        if cached is None or len(cached[0]) != len(t_rows):
            cached = np.asarray(t_rows, dtype=np.int64), np.asarray(t_tfs, dtype=np.float32)
            self._tail_cache[term_id] = cached
        return cached

    def _compact(self) -> None:
        """Merge the tail into the sorted part and drop the postings of dead rows."""
        terms = [np.repeat(np.arange(len(self.ptr) - 1, dtype=np.int64), np.diff(self.ptr))]
        rows, tfs = [self.rows], [self.tfs]
        for term_id, (t_rows, t_tfs) in self.tail.items():
            terms.append(np.full(len(t_rows), term_id, dtype=np.int64))
            rows.append(np.asarray(t_rows, dtype=np.int64))
            tfs.append(np.asarray(t_tfs, dtype=np.float32))
        every_term, every_row = np.concatenate(terms), np.concatenate(rows)
        keep = self.alive[every_row]
        every_term, every_row = every_term[keep], every_row[keep]
        every_tf = np.concatenate(tfs)[keep]
        order = np.lexsort((every_row, every_term))
        self.rows, self.tfs = every_row[order], every_tf[order]
        counts = np.bincount(every_term, minlength=len(self.vocab))
        self.ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.tail, self._tail_cache = {}, {}
        self.tail_size = 0
        self.dead_postings = 0


def _grown(array: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    out = np.zeros(size, dtype=array.dtype)
    out[: len(array)] = array
    return out
