"""Retrieval indexes of a vector store: BM25 (``sparse``), vectors (``dense``), their fusion
(``fusion``) and the searcher that composes them (``hybrid``). All of it is derived data,
rebuildable from the chunks and embeddings in the store."""

from rixin.knowledge.index.dense import DenseIndex
from rixin.knowledge.index.fusion import convex, normalise, rrf
from rixin.knowledge.index.hybrid import Hit, HybridSearcher, SearchOptions
from rixin.knowledge.index.segment import query_terms, tokenize
from rixin.knowledge.index.sparse import SparseIndex

__all__ = [
    "DenseIndex",
    "Hit",
    "HybridSearcher",
    "SearchOptions",
    "SparseIndex",
    "convex",
    "normalise",
    "query_terms",
    "rrf",
    "tokenize",
]
