"""Rank fusion as small pure functions.

* ``rrf``: reciprocal-rank fusion (Cormack et al., 2009): ``score(d) = sum_r 1 / (k + rank_r(d))``
  over the rankings that contain ``d`` (ranks from 1). Scale-free: only the orders matter.
* ``convex``: ``alpha * norm(dense) + (1 - alpha) * norm(sparse)``, each list normalised on its
  own (min-max to [0, 1], or z-score); a document missing from one list gets that list's floor
  (0 after min-max, the list's minimum z after z-score), so being found by one retriever only
  never beats being found by both at the same strength.

Every function returns ``(id, score)`` pairs sorted best first, ties broken by id so the
result is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

Normalisation = Literal["minmax", "zscore"]


def _ranked(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def rrf(rankings: Sequence[Sequence[str]], k: int = 60) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion of ranked id lists (best first); ``k`` damps the top ranks."""
    if k < 0:
        raise ValueError("rrf k must be non-negative")
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    return _ranked(fused)


def normalise(scores: Mapping[str, float], how: Normalisation = "minmax") -> dict[str, float]:
    """Scores mapped to a common scale: min-max to [0, 1] (all equal: 1), or z-scores."""
    if not scores:
        return {}
    values = list(scores.values())
    if how == "minmax":
        low, high = min(values), max(values)
        if high == low:
            return dict.fromkeys(scores, 1.0)
        return {d: (s - low) / (high - low) for d, s in scores.items()}
    if how == "zscore":
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        if std == 0.0:
            return dict.fromkeys(scores, 0.0)
        return {d: (s - mean) / std for d, s in scores.items()}
    raise ValueError(f"unknown normalisation {how!r}")


def convex(
    dense_scores: Mapping[str, float],
    sparse_scores: Mapping[str, float],
    alpha: float,
    how: Normalisation = "minmax",
) -> list[tuple[str, float]]:
    """``alpha * dense + (1 - alpha) * sparse`` after per-list normalisation; alpha in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("convex alpha must be within [0, 1]")
    dense = normalise(dense_scores, how)
    sparse = normalise(sparse_scores, how)
    dense_floor = min(dense.values(), default=0.0) if how == "zscore" else 0.0
    sparse_floor = min(sparse.values(), default=0.0) if how == "zscore" else 0.0
    fused = {
        d: alpha * dense.get(d, dense_floor) + (1.0 - alpha) * sparse.get(d, sparse_floor)
        for d in dense.keys() | sparse.keys()
    }
    return _ranked(fused)
