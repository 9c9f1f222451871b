"""Unit tests for the pure semantic-duplicate algorithm (synthetic vectors, no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_assets.lib.duplicates import (
    DISTANCE_TOLERANCE,
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


def _find(x: np.ndarray, cutoff: float, k: int = 10, **kwargs) -> DuplicateResult:
    """``find_duplicates`` as the pipeline calls it: with the kNN graph of the unit vectors."""
    return find_duplicates(x, cutoff, knn=knn_graph(_unit(x), k), **kwargs)


def _oracle_pairs(x: np.ndarray, cutoff: float) -> pd.DataFrame:
    """Every pair ``i < j`` within ``cutoff``, by brute force in float64: the reference."""
    u = x.astype(np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    dist = 1.0 - u @ u.T
    i, j = np.nonzero(np.triu(dist <= cutoff + DISTANCE_TOLERANCE, k=1))
    return pd.DataFrame({"i": i, "j": j, "distance": dist[i, j]})


def _assert_matches_oracle(
    res: DuplicateResult, x: np.ndarray, cutoff: float, priority: np.ndarray | None = None
) -> set[tuple[int, int]]:
    """The result holds exactly the oracle's pairs and distances, its clusters are the pairs'
    connected components, and each keeps its lowest-priority (then first) row. Returns the pairs.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(x)
    _check_invariants(res, n)
    truth = _oracle_pairs(x, cutoff)
    found = set(zip(res.pairs.i.tolist(), res.pairs.j.tolist(), strict=True))
    assert found == set(zip(truth.i.tolist(), truth.j.tolist(), strict=True))
    np.testing.assert_allclose(res.pairs.distance, truth.distance, atol=1e-5)
    graph = coo_matrix((np.ones(len(truth)), (truth.i, truth.j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # Same partition: cluster ids and components map one to one.
    links = set(zip(res.cluster_id.tolist(), component.tolist(), strict=True))
    assert len(links) == len(set(component.tolist())) == len(set(res.cluster_id.tolist()))
    rank = np.arange(n) if priority is None else np.asarray(priority)
    order = np.lexsort((np.arange(n), rank))  # by priority, then upload order
    keeper = pd.Series(order, index=component[order]).groupby(level=0).first()
    size = np.bincount(component)
    for comp, row in keeper.items():
        expected = "retention candidate" if size[comp] > 1 else "singleton"
        assert res.duplicate_class[row] == expected
    return found


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
    res = _find(x, 0.1)
    found = _assert_matches_oracle(res, x, 0.1)
    for a, b in pairs:
        assert res.cluster_id[a] == res.cluster_id[b]
        assert res.duplicate_class[a] == "retention candidate"  # first in upload order
        assert res.duplicate_class[b] == "deletion candidate"
    assert res.n_clusters == 100 and res.n_deletion == 100
    assert found == set(pairs)


def test_exact_copies_share_a_cluster_even_at_cutoff_zero() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 16)).astype(np.float32) * 3  # not normalised on purpose
    x[[10, 20, 30]] = x[3]
    x[40] = x[3] * 2.5  # same direction, different length: cosine distance ~0
    res = _find(x, 0.0)
    _assert_matches_oracle(res, x, 0.0)
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
    res = _find(x[:500], 0.1)  # originals only: no duplicates
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
    res = _find(x, 0.1, k=3)
    _assert_matches_oracle(res, x, 0.1)
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
        res = _find(x, cutoff)
        found = _assert_matches_oracle(res, x, cutoff)
        assert prev_set <= found
        assert len(res.pairs) >= prev_pairs and res.n_deletion >= prev_del
        assert (res.pairs.distance <= cutoff + 1e-6).all()
        prev_pairs, prev_del, prev_set = len(res.pairs), res.n_deletion, found


@pytest.mark.parametrize("cutoff", [-0.01, 2.5, float("nan")])
def test_invalid_cutoff(cutoff: float) -> None:
    with pytest.raises(ValueError, match="cutoff"):
        _find(np.eye(3, dtype=np.float32), cutoff)


def test_cutoff_bounds_are_valid() -> None:
    x = _unit(np.random.default_rng(4).standard_normal((20, 8)))
    every = _find(x, 2.0)  # everything is within distance 2: every row is range-searched
    assert every.n_clusters == 1 and len(every.pairs) == 20 * 19 // 2
    assert _find(x, 0.0).n_clusters == 0


def test_invalid_inputs() -> None:
    eye = np.eye(3, dtype=np.float32)
    graph = knn_graph(eye, 2)
    with pytest.raises(TypeError, match="knn"):  # the map's graph is required
        find_duplicates(eye, 0.1)
    with pytest.raises(ValueError, match="2-D"):
        find_duplicates(np.zeros(3, np.float32), knn=graph)
    with pytest.raises(ValueError, match="NaN or infinite"):
        find_duplicates(np.full((3, 3), np.nan, np.float32), knn=graph)
    with pytest.raises(ValueError, match="priority"):
        find_duplicates(eye, knn=graph, priority=np.arange(2))
    with pytest.raises(ValueError, match="knn graph"):
        find_duplicates(eye, knn=knn_graph(np.eye(4, dtype=np.float32), 2))


def test_empty_and_single_row() -> None:
    empty = find_duplicates(np.zeros((0, 8), np.float32), knn=knn_graph(np.zeros((0, 8)), 10))
    assert empty.cluster_id.shape == (0,) and empty.duplicate_class.shape == (0,)
    assert empty.pairs.empty and list(empty.pairs.columns) == ["i", "j", "distance"]
    assert empty.n_clusters == 0 and empty.n_deletion == 0
    one = _find(np.ones((1, 8), np.float32), 0.1)
    assert one.cluster_id.tolist() == [0] and one.duplicate_class.tolist() == ["singleton"]
    assert one.pairs.empty
    two = _find(np.ones((2, 8), np.float32), 0.1)
    assert two.duplicate_class.tolist() == ["retention candidate", "deletion candidate"]


def _crowded(x: np.ndarray) -> np.ndarray:
    """``x`` plus a group of 6 exact copies of row 7 and one of 12 near copies of row 8: more
    duplicates than small graphs hold, so their rows are saturated."""
    rng = np.random.default_rng(5)
    return np.vstack([x, *[x[7]] * 6, *[_near(x[8], 0.02, rng) for _ in range(12)]])


@pytest.mark.parametrize("k", [1, 3, 10])
def test_saturated_rows_are_range_searched(planted, k: int) -> None:
    x = _crowded(planted[0])
    graph = knn_graph(x, k)
    for cutoff in (0.05, 0.1):
        # The near-copy group's 13 rows each have more duplicates than the graph holds.
        assert (graph.distances[:, -1] <= cutoff).sum() >= 13
        _assert_matches_oracle(find_duplicates(x, cutoff, knn=graph), x, cutoff)


def test_knn_graph_smaller_than_k() -> None:
    x = np.vstack([np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32)[:1]])
    res = find_duplicates(x, 0.1, knn=knn_graph(x, 10))  # -1-padded graph
    assert res.pairs[["i", "j"]].values.tolist() == [[0, 4]]


def test_partitioned_search_for_saturated_rows_past_exact_limit(planted) -> None:
    x, pairs = planted
    x = _crowded(x)
    # k=1 saturates every duplicate's row; past exact_limit they go to the k-means cells.
    res = find_duplicates(x, 0.1, knn=knn_graph(x, 1), exact_limit=100, nprobe=4)
    found = _assert_matches_oracle(res, x, 0.1)
    assert set(pairs) <= found


def test_priority_chooses_retention(planted) -> None:
    x, _ = planted
    priority = np.zeros(len(x))
    priority[1000:1100] = -1  # prefer the later copies
    res = _find(x, 0.1, priority=priority)
    _assert_matches_oracle(res, x, 0.1, priority)
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
    res = _find(x, 0.1, k=3, priority=keep_priority("longest", texts=texts))
    assert res.duplicate_class[[0, 2, 4]].tolist() == [
        "deletion candidate",
        "retention candidate",
        "deletion candidate",
    ]
    fields = pd.DataFrame({"views": [5, 0, 9, 0, 1, 0]})
    res = _find(x, 0.1, k=3, priority=keep_priority("min:views", fields=fields))
    assert res.duplicate_class[4] == "retention candidate"
