"""Fusion functions: RRF and convex combination are pure, deterministic and order-sensible."""

from __future__ import annotations

import math
import random

import pytest

from rixin.knowledge.index.fusion import convex, normalise, rrf


def test_rrf_scores_are_sums_of_reciprocal_ranks() -> None:
    fused = dict(rrf([["a", "b", "c"], ["b", "a"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63)


def test_rrf_is_deterministic_and_ties_break_by_id() -> None:
    assert [d for d, _ in rrf([["b", "a"], ["a", "b"]])] == ["a", "b"]
    assert rrf([]) == []
    with pytest.raises(ValueError):
        rrf([["a"]], k=-1)


def test_rrf_first_everywhere_wins_and_agreement_beats_one_list() -> None:
    rng = random.Random(7)
    for _ in range(50):
        docs = [f"d{i}" for i in range(20)]
        lists = [rng.sample(docs, 10) for _ in range(3)]
        for ranking in lists:
            ranking.remove("star") if "star" in ranking else None
            ranking.insert(0, "star")
        fused = rrf(lists)
        assert fused[0][0] == "star"
        assert fused == sorted(fused, key=lambda item: (-item[1], item[0]))


def test_rrf_is_invariant_to_list_order() -> None:
    a, b = ["x", "y", "z"], ["z", "w"]
    assert rrf([a, b]) == rrf([b, a])


def test_minmax_and_zscore_normalisation() -> None:
    assert normalise({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert normalise({"a": 5.0, "b": 5.0}) == {"a": 1.0, "b": 1.0}
    z = normalise({"a": 1.0, "b": 2.0, "c": 3.0}, "zscore")
    assert math.fsum(z.values()) == pytest.approx(0.0)
    assert z["c"] == pytest.approx(-z["a"])
    assert normalise({}) == {}
    with pytest.raises(ValueError):
        normalise({"a": 1.0}, "bogus")  # type: ignore[arg-type]


def test_convex_extremes_reproduce_each_ranking() -> None:
    dense = {"a": 0.9, "b": 0.5, "c": 0.1}
    sparse = {"c": 12.0, "b": 3.0, "d": 1.0}
    assert [d for d, _ in convex(dense, sparse, alpha=1.0)][:3] == ["a", "b", "c"]
    assert [d for d, _ in convex(dense, sparse, alpha=0.0)][:2] == ["c", "b"]


@pytest.mark.parametrize("how", ["minmax", "zscore"])
def test_convex_is_scale_invariant_and_bounded(how: str) -> None:
    dense = {"a": 0.9, "b": 0.5, "c": 0.1}
    sparse = {"c": 12.0, "b": 3.0, "d": 1.0}
    scaled = {d: s * 1000 + 7 for d, s in sparse.items()}
    one = convex(dense, sparse, 0.3, how)  # type: ignore[arg-type]
    two = convex(dense, scaled, 0.3, how)  # type: ignore[arg-type]
    assert [d for d, _ in one] == [d for d, _ in two]
    if how == "minmax":
        assert all(0.0 <= s <= 1.0 for _, s in one)


def test_convex_missing_side_counts_as_its_floor() -> None:
    # "b" is found by both at the top; "a" only by dense at the same strength.
    fused = dict(convex({"a": 1.0, "b": 1.0, "x": 0.0}, {"b": 5.0, "y": 1.0}, alpha=0.5))
    assert fused["b"] > fused["a"]
    with pytest.raises(ValueError):
        convex({}, {}, alpha=1.5)
