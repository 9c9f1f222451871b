"""Unit tests for the pure semantic-duplicate algorithm (synthetic vectors, no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_assets.lib.duplicates import (
    DUPLICATE_CLASSES,
    DuplicateResult,
    find_duplicates,
    keep_priority,
)
from atlas_assets.lib.knn import knn_graph


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _near(v: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly ``distance`` cosine distance from unit vector ``v``."""
    noise = rng.standard_normal(v.shape).astype(np.float32)
    noise -= noise.dot(v) * v  # orthogonal to v
    noise /= np.linalg.norm(noise)
    cos = 1.0 - distance
    return (cos * v + np.sqrt(1.0 - cos**2) * noise).astype(np.float32)


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """2,000 random 32-d unit vectors (pairwise distances ~1) with planted duplicates."""
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((2000, 32)))
    pairs = []
    for n, (src, dst) in enumerate(zip(range(0, 100), range(1000, 1100), strict=True)):
        x[dst] = x[src] if n % 2 == 0 else _near(x[src], 0.03, rng)
        pairs.append((src, dst))
    return x, pairs


def _check_invariants(res: DuplicateResult, n: int) -> None:
    assert res.cluster_id.shape == (n,) and res.cluster_id.dtype == np.int64
    assert res.duplicate_class.shape == (n,)
    assert set(res.duplicate_class.tolist()) <= set(DUPLICATE_CLASSES)
    assert list(res.pairs.columns) == ["i", "j", "distance"]
    assert (res.pairs["i"] < res.pairs["j"]).all()
    assert res.pairs["distance"].dtype == np.float32
    df = pd.DataFrame({"c": res.cluster_id, "k": res.duplicate_class})
    sizes = df.groupby("c").size()
    retained = df[df.k == "retention candidate"].groupby("c").size()
    multi = sizes[sizes > 1].index
    # Exactly one retention candidate in each cluster of 2+, none elsewhere.
    assert retained.reindex(multi).eq(1).all()
    assert set(retained.index) == set(multi)
    # Singletons are alone in their cluster; everyone else is in a cluster of 2+.
    assert (sizes[df.loc[df.k == "singleton", "c"]] == 1).all()
    assert (sizes[df.loc[df.k != "singleton", "c"]] > 1).all()
    # Ids are numbered in order of each cluster's first row.
    firsts = df.drop_duplicates("c")["c"].to_numpy()
    assert (firsts == np.arange(len(firsts))).all()
    assert res.n_clusters == len(multi)
    assert res.n_deletion == int((df.k == "deletion candidate").sum())


def test_planted_duplicates_found_with_invariants(planted) -> None:
    x, pairs = planted
    res = find_duplicates(x, 0.1)
    _check_invariants(res, len(x))
    for a, b in pairs:
        assert res.cluster_id[a] == res.cluster_id[b]
        assert res.duplicate_class[a] == "retention candidate"  # first in upload order
        assert res.duplicate_class[b] == "deletion candidate"
    assert res.n_clusters == 100 and res.n_deletion == 100
    found = set(zip(res.pairs.i, res.pairs.j, strict=True))
    assert found == set(pairs)


def test_exact_copies_share_a_cluster_even_at_cutoff_zero() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 16)).astype(np.float32) * 3  # not normalised on purpose
    x[[10, 20, 30]] = x[3]
    x[40] = x[3] * 2.5  # same direction, different length: cosine distance ~0
    res = find_duplicates(x, 0.0)
    _check_invariants(res, len(x))
    assert len(set(res.cluster_id[[3, 10, 20, 30, 40]])) == 1
    assert res.n_deletion == 4
    exact = res.pairs[(res.pairs.i == 3) & (res.pairs.j == 10)]
    assert exact.distance.item() == 0.0
    assert len(res.pairs) == 10  # every pair among the five rows


@pytest.mark.parametrize("collide", [False, True])
def test_exact_copies_grouped_whatever_the_hashes_say(monkeypatch, collide: bool) -> None:
    # Every row hashing alike must not merge distinct vectors: the byte check falls back.
    from atlas_assets.lib import duplicates

    if collide:
        monkeypatch.setattr(duplicates, "_row_hashes", lambda x: np.zeros(len(x), np.uint64))
    rng = np.random.default_rng(2)
    x = _unit(rng.standard_normal((40, 8)))
    x[[5, 17]] = x[2]
    first, inverse = duplicates._unique_rows(x)
    assert first.tolist() == [i for i in range(40) if i not in (5, 17)]
    assert inverse[5] == inverse[17] == inverse[2] and len(set(inverse.tolist())) == 38
    np.testing.assert_array_equal(x[first][inverse], x)


def test_rows_without_neighbours_are_singletons_with_unique_ids(planted) -> None:
    x, _ = planted
    res = find_duplicates(x[:500], 0.1)  # originals only: no duplicates
    assert (res.duplicate_class == "singleton").all()
    assert (res.cluster_id == np.arange(500)).all()
    assert res.n_clusters == 0 and res.n_deletion == 0 and res.pairs.empty


def test_chains_are_one_cluster() -> None:
    rng = np.random.default_rng(2)
    v = _unit(rng.standard_normal((1, 64)))[0]
    rows = [v]
    for _ in range(4):  # each step 0.06 away from the previous one: a chain, not a clique
        rows.append(_near(rows[-1], 0.06, rng))
    x = np.vstack(rows + list(_unit(rng.standard_normal((5, 64)))))
    res = find_duplicates(x, 0.1)
    assert len(set(res.cluster_id[:5])) == 1
    assert res.n_clusters == 1 and res.n_deletion == 4


def test_monotonic_in_cutoff() -> None:
    rng = np.random.default_rng(3)
    base = _unit(rng.standard_normal((300, 24)))
    near = np.vstack([_near(base[i], d, rng) for i, d in enumerate(np.linspace(0, 0.3, 300))])
    x = np.vstack([base, near])
    prev_pairs, prev_del = -1, -1
    prev_set: set = set()
    for cutoff in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3):
        res = find_duplicates(x, cutoff)
        _check_invariants(res, len(x))
        found = set(zip(res.pairs.i, res.pairs.j, strict=True))
        assert prev_set <= found
        assert len(res.pairs) >= prev_pairs and res.n_deletion >= prev_del
        assert (res.pairs.distance <= cutoff + 1e-6).all()
        prev_pairs, prev_del, prev_set = len(res.pairs), res.n_deletion, found


@pytest.mark.parametrize("cutoff", [-0.01, 2.5, float("nan")])
def test_invalid_cutoff(cutoff: float) -> None:
    with pytest.raises(ValueError, match="cutoff"):
        find_duplicates(np.eye(3, dtype=np.float32), cutoff)


def test_cutoff_bounds_are_valid() -> None:
    x = _unit(np.random.default_rng(4).standard_normal((20, 8)))
    assert find_duplicates(x, 2.0).n_clusters == 1  # everything is within distance 2
    assert find_duplicates(x, 0.0).n_clusters == 0


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="2-D"):
        find_duplicates(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="priority"):
        find_duplicates(np.eye(3, dtype=np.float32), priority=np.arange(2))
    with pytest.raises(ValueError, match="knn graph"):
        find_duplicates(np.eye(3, dtype=np.float32), knn=knn_graph(np.eye(4, dtype=np.float32), 2))


def test_empty_and_single_row() -> None:
    empty = find_duplicates(np.zeros((0, 8), np.float32))
    assert empty.cluster_id.shape == (0,) and empty.duplicate_class.shape == (0,)
    assert empty.pairs.empty and list(empty.pairs.columns) == ["i", "j", "distance"]
    assert empty.n_clusters == 0 and empty.n_deletion == 0
    one = find_duplicates(np.ones((1, 8), np.float32))
    assert one.cluster_id.tolist() == [0] and one.duplicate_class.tolist() == ["singleton"]
    assert one.pairs.empty
    two = find_duplicates(np.ones((2, 8), np.float32))
    assert two.duplicate_class.tolist() == ["retention candidate", "deletion candidate"]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_path_agrees_with_range_search(planted, k: int) -> None:
    x, _ = planted
    rng = np.random.default_rng(5)
    # A few big groups of exact and near copies saturate small graphs, forcing the fallback.
    extra = np.vstack([x[7]] * 6 + [_near(x[8], 0.02, rng) for _ in range(12)])
    x = np.vstack([x, extra])
    graph = knn_graph(x, k)
    for cutoff in (0.05, 0.1):
        direct = find_duplicates(x, cutoff)
        via_graph = find_duplicates(x, cutoff, knn=graph)
        pd.testing.assert_frame_equal(direct.pairs, via_graph.pairs)
        np.testing.assert_array_equal(direct.cluster_id, via_graph.cluster_id)
        np.testing.assert_array_equal(direct.duplicate_class, via_graph.duplicate_class)


def test_knn_graph_smaller_than_k() -> None:
    x = np.vstack([np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32)[:1]])
    res = find_duplicates(x, 0.1, knn=knn_graph(x, 10))  # -1-padded graph
    assert res.pairs[["i", "j"]].values.tolist() == [[0, 4]]


def test_partitioned_path_finds_planted_duplicates(planted) -> None:
    x, pairs = planted
    exact = find_duplicates(x, 0.1)
    part = find_duplicates(x, 0.1, exact_limit=100, nprobe=4)
    _check_invariants(part, len(x))
    found = set(zip(part.pairs.i, part.pairs.j, strict=True))
    assert found == set(pairs)
    np.testing.assert_array_equal(exact.cluster_id, part.cluster_id)
    # The graph's fallback for saturated rows uses the partitioned search too.
    graph = knn_graph(x, 1)
    part_graph = find_duplicates(x, 0.1, knn=graph, exact_limit=100, nprobe=4)
    assert set(zip(part_graph.pairs.i, part_graph.pairs.j, strict=True)) == set(pairs)


def test_priority_chooses_retention(planted) -> None:
    x, _ = planted
    priority = np.zeros(len(x))
    priority[1000:1100] = -1  # prefer the later copies
    res = find_duplicates(x, 0.1, priority=priority)
    assert (res.duplicate_class[1000:1100] == "retention candidate").all()
    assert (res.duplicate_class[0:100] == "deletion candidate").all()


# --------------------------------------------------------------------------------------------
# keep rules


def test_keep_first() -> None:
    assert keep_priority("first", n=4).tolist() == [0, 1, 2, 3]
    assert keep_priority("first", texts=["a", "b"]).tolist() == [0, 1]
    assert keep_priority("first", fields=pd.DataFrame({"v": [1, 2, 3]})).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="row count"):
        keep_priority("first")


def test_keep_longest_ties_by_upload_order() -> None:
    texts = ["a", "ccc", "bb", "ddd", None]
    assert keep_priority("longest", texts=texts).tolist() == [3, 0, 2, 1, 4]
    with pytest.raises(ValueError, match="texts"):
        keep_priority("longest")


def test_keep_max_min_field() -> None:
    fields = pd.DataFrame({"score": [1.0, np.nan, 3.0, 3.0, 0.5]}, index=[10, 11, 12, 13, 14])
    assert keep_priority("max:score", fields=fields).tolist() == [2, 4, 0, 1, 3]
    assert keep_priority("min:score", fields=fields).tolist() == [1, 4, 2, 3, 0]
    dates = pd.DataFrame({"when": pd.to_datetime(["2024-01-02", "2023-05-01", "2024-01-02"])})
    assert keep_priority("max:when", fields=dates).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="missing"):
        keep_priority("max:missing", fields=fields)
    with pytest.raises(ValueError, match="keep must be"):
        keep_priority("median:score", fields=fields)


def test_keep_rule_drives_retention() -> None:
    rng = np.random.default_rng(6)
    x = _unit(rng.standard_normal((6, 16)))
    x[[2, 4]] = x[0]
    texts = ["short", "x", "the longest text", "y", "mid text", "z"]
    res = find_duplicates(x, 0.1, priority=keep_priority("longest", texts=texts))
    assert res.duplicate_class[[0, 2, 4]].tolist() == [
        "deletion candidate",
        "retention candidate",
        "deletion candidate",
    ]
    fields = pd.DataFrame({"views": [5, 0, 9, 0, 1, 0]})
    res = find_duplicates(x, 0.1, priority=keep_priority("min:views", fields=fields))
    assert res.duplicate_class[4] == "retention candidate"


def test_lower_bound_projection_is_exact(monkeypatch) -> None:
    """The pruned join (low-rank data, where it kicks in) finds exactly the plain join's pairs."""
    from atlas_assets.lib import duplicates

    rng = np.random.default_rng(7)
    x = rng.standard_normal((5000, 12)) @ rng.standard_normal((12, 160))
    x = _unit(x + 0.05 * rng.standard_normal(x.shape))
    for n, src in enumerate(range(0, 300, 3)):
        x[4000 + n] = _near(x[src], 0.01 * (n % 12), rng)
    assert duplicates._bound_vectors(x, 0.1) is not None
    pruned = {c: find_duplicates(x, c) for c in (0.05, 0.1)}
    monkeypatch.setattr(duplicates, "_bound_vectors", lambda *args: None)
    for cutoff, res in pruned.items():
        plain = find_duplicates(x, cutoff)
        assert len(plain.pairs) >= 50
        pd.testing.assert_frame_equal(res.pairs, plain.pairs)


def test_lower_bound_skipped_for_isotropic_vectors() -> None:
    from atlas_assets.lib import duplicates

    # A large cutoff on isotropic vectors: the bound would keep most pairs as candidates.
    x = _unit(np.random.default_rng(8).standard_normal((5000, 384)))
    assert duplicates._bound_vectors(x, 0.8) is None
