"""The dense index: exact and HNSW search agree, filters, persistence, rebuild after loss."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rixin.knowledge.index.dense import DenseIndex

DIMS = 32


def _data(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"c{i}" for i in range(n)], rng.standard_normal((n, DIMS)).astype(np.float32)


def _exact(vectors: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return [int(i) for i in np.argsort(-(unit @ (q / np.linalg.norm(q))))[:k]]


def test_flat_search_is_exact_cosine(tmp_path: Path) -> None:
    ids, vectors = _data(200)
    index = DenseIndex.open(tmp_path / "d", DIMS)
    assert index.stale and index.count == 0 and index.search(vectors[0], 5) == []
    index.add(ids, vectors * 3.0)  # scale does not matter under cosine
    assert index.mode == "flat"
    hits = index.search(vectors[7], 5)
    assert [c for c, _ in hits] == [ids[i] for i in _exact(vectors, vectors[7], 5)]
    assert hits[0] == ("c7", pytest.approx(1.0, abs=1e-5))


def test_flat_and_hnsw_agree(tmp_path: Path) -> None:
    ids, vectors = _data(600, seed=1)
    flat = DenseIndex.open(tmp_path / "flat", DIMS)
    hnsw = DenseIndex.open(tmp_path / "hnsw", DIMS, flat_limit=100)
    flat.add(ids, vectors)
    hnsw.add(ids, vectors)
    assert (flat.mode, hnsw.mode) == ("flat", "hnsw")
    queries = np.random.default_rng(2).standard_normal((30, DIMS)).astype(np.float32)
    overlap = []
    for q in queries:
        a, b = flat.search(q, 10), hnsw.search(q, 10)
        overlap.append(len({c for c, _ in a} & {c for c, _ in b}) / 10)
        assert a[0] == (b[0][0], pytest.approx(b[0][1], abs=1e-4))
    assert np.mean(overlap) >= 0.95


@pytest.mark.parametrize("flat_limit", [10_000, 50])
def test_remove_replace_and_allowed_ids(tmp_path: Path, flat_limit: int) -> None:
    ids, vectors = _data(300, seed=3)
    index = DenseIndex.open(tmp_path / "d", DIMS, flat_limit=flat_limit)
    index.add(ids, vectors)
    index.search(vectors[0], 1)  # builds the graph in HNSW mode
    index.remove(["c0", "c1", "missing"])
    assert index.count == 298
    assert all(c not in ("c0", "c1") for c, _ in index.search(vectors[0], 20))
    index.add(["c2"], [vectors[5]])  # replaced: c2 now sits where c5 is
    top = index.search(vectors[5], 2)
    assert {c for c, _ in top} == {"c2", "c5"}
    allowed = {"c10", "c20", "c30", "gone"}
    hits = index.search(vectors[20], 10, allowed_ids=allowed)
    assert [c for c, _ in hits][0] == "c20" and {c for c, _ in hits} == allowed - {"gone"}
    many = set(ids[100:300])  # large filter: HNSW over-fetches and filters
    assert {c for c, _ in index.search(vectors[150], 5, allowed_ids=many)} <= many
    assert index.search(vectors[150], 5, allowed_ids=set()) == []


def test_save_reopen_and_rebuild_after_the_directory_is_lost(tmp_path: Path) -> None:
    ids, vectors = _data(400, seed=4)
    where = tmp_path / "vs_1"
    index = DenseIndex.open(where, DIMS, flat_limit=100)
    index.add(ids, vectors)
    index.remove(["c3"])
    expected = index.search(vectors[9], 10)
    index.save()
    assert sorted(p.name for p in where.iterdir()) == ["hnsw.usearch", "meta.json", "vectors.npy"]

    again = DenseIndex.open(where, DIMS, flat_limit=100)
    assert not again.stale and again.count == 399
    assert [c for c, _ in again.search(vectors[9], 10)] == [c for c, _ in expected]

    assert DenseIndex.open(where, DIMS + 1).stale  # other dimensions: rebuild
    shutil.rmtree(where)
    lost = DenseIndex.open(where, DIMS, flat_limit=100)
    assert lost.stale and lost.count == 0
    lost.rebuild((c, v) for c, v in zip(ids, vectors, strict=True) if c != "c3")
    assert not lost.stale and where.exists()
    rebuilt = DenseIndex.open(where, DIMS, flat_limit=100)
    assert rebuilt.search(vectors[9], 1)[0][0] == "c9"
    assert rebuilt.count == 399


def test_damaged_files_are_reported_stale(tmp_path: Path) -> None:
    ids, vectors = _data(20)
    index = DenseIndex.open(tmp_path / "d", DIMS)
    index.add(ids, vectors)
    index.save()
    (tmp_path / "d" / "vectors.npy").write_bytes(b"garbage")
    assert DenseIndex.open(tmp_path / "d", DIMS).stale


def test_rejects_bad_vectors(tmp_path: Path) -> None:
    index = DenseIndex.open(tmp_path / "d", DIMS)
    with pytest.raises(ValueError):
        index.add(["a"], np.zeros((1, DIMS + 1)))
    with pytest.raises(ValueError):
        index.add(["a", "b"], np.zeros((1, DIMS)))
    with pytest.raises(ValueError):
        index.add(["a", "a"], np.ones((2, DIMS)))
    with pytest.raises(ValueError):
        index.add(["a"], np.full((1, DIMS), np.nan))
    with pytest.raises(ValueError):
        DenseIndex(tmp_path, DIMS, metric="l2")  # type: ignore[arg-type]
