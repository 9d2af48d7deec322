"""BM25 over SQLite FTS5, one index per vector store.

Documents are tokenised by ``rixin.knowledge.index.segment`` before they reach SQLite, and the
FTS5 table stores the tokens space-joined, so FTS5's ``unicode61`` tokenizer only splits on the
spaces: Chinese is segmented by jieba, English stemmed, and SQLite needs no custom tokenizer.

A query is the OR of its distinct tokens, each written as an FTS5 string (``"tok"``, with ``"``
doubled), so nothing a user types is read as FTS5 syntax (``NEAR``, ``*``, ``-``, ``:`` …).

FTS5's ``bm25()`` (k1 = 1.2, b = 0.75, fixed by SQLite) is lower-is-better and negative; scores
returned here are its negation, so higher is better and every match scores above zero.

Two tables per index: ``<name>_ids`` maps chunk ids to integer row ids (unique, indexed), and
``<name>_fts`` holds the tokens under the same row ids. The class is synchronous; it serialises
its calls on one lock, so the API layer may call it from worker threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Collection, Iterable
from pathlib import Path

from rixin.knowledge.index.segment import query_terms, tokenize

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def match_expression(terms: Iterable[str]) -> str:
    """An FTS5 query matching any of ``terms``, each quoted as an FTS5 string."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def _statements(ids: str, fts: str) -> dict[str, str]:
    """Every statement of an index; ``ids``/``fts`` are checked identifiers (``_NAME``)."""
    search = (
        f"SELECT i.chunk_id, -bm25({fts}) AS score FROM {fts} "  # noqa: S608
        f"JOIN {ids} AS i ON i.rowid = {fts}.rowid WHERE {fts} MATCH ?"
    )
    allowed = " AND i.chunk_id IN (SELECT value FROM json_each(?))"
    order = " ORDER BY score DESC, i.chunk_id LIMIT ?"
    return {
        "create_ids": f"CREATE TABLE IF NOT EXISTS {ids} "
        "(rowid INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE)",
        "create_fts": f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5("
        "tokens, tokenize = 'unicode61 remove_diacritics 0')",
        "count": f"SELECT count(*) FROM {ids}",  # noqa: S608
        "insert_id": f"INSERT INTO {ids} (chunk_id) VALUES (?)",  # noqa: S608
        "insert_fts": f"INSERT INTO {fts} (rowid, tokens) VALUES (?, ?)",  # noqa: S608
        "find": f"SELECT rowid FROM {ids} WHERE chunk_id = ?",  # noqa: S608
        "delete_fts": f"DELETE FROM {fts} WHERE rowid = ?",  # noqa: S608
        "delete_id": f"DELETE FROM {ids} WHERE rowid = ?",  # noqa: S608
        "clear_fts": f"DELETE FROM {fts}",  # noqa: S608
        "clear_ids": f"DELETE FROM {ids}",  # noqa: S608
        "search": search + order,
        "search_allowed": search + allowed + order,
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
        self._sql = _statements(f"{name}_ids", f"{name}_fts")
        self._lock = threading.RLock()
        with self._lock, self._conn:
            self._conn.execute(self._sql["create_ids"])
            self._conn.execute(self._sql["create_fts"])

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
        rows = [(chunk_id, " ".join(tokenize(text))) for chunk_id, text in items]
        with self._lock, self._conn:
            self._delete(chunk_id for chunk_id, _ in rows)
            for chunk_id, tokens in rows:
                cursor = self._conn.execute(self._sql["insert_id"], (chunk_id,))
                self._conn.execute(self._sql["insert_fts"], (cursor.lastrowid, tokens))

    def delete(self, chunk_ids: Iterable[str]) -> None:
        with self._lock, self._conn:
            self._delete(chunk_ids)

    def _delete(self, chunk_ids: Iterable[str]) -> None:
        for chunk_id in chunk_ids:
            row = self._conn.execute(self._sql["find"], (chunk_id,)).fetchone()
            if row is not None:
                self._conn.execute(self._sql["delete_fts"], row)
                self._conn.execute(self._sql["delete_id"], row)

    def search(
        self, query: str, k: int, allowed_ids: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """Up to ``k`` (chunk id, BM25 score) pairs, best first; only ``allowed_ids`` if given."""
        terms = query_terms(query)
        if not terms or k <= 0 or (allowed_ids is not None and not allowed_ids):
            return []
        params: list[object] = [match_expression(terms)]
        if allowed_ids is None:
            sql = self._sql["search"]
        else:
            sql = self._sql["search_allowed"]
            params.append(json.dumps(list(allowed_ids)))
        params.append(k)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [(str(chunk_id), float(score)) for chunk_id, score in rows]

    def clear(self) -> None:
        with self._lock, self._conn:
            self._conn.execute(self._sql["clear_fts"])
            self._conn.execute(self._sql["clear_ids"])

    def close(self) -> None:
        if self._owns:
            self._conn.close()
