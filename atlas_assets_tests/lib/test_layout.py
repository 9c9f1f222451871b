"""The parallel UMAP layout: reproducible on any number of threads, faithful forces, sound maps."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse
from sklearn.manifold import trustworthiness

from atlas_assets.lib import layout
from atlas_assets.lib.embed import normalize
from atlas_assets.lib.knn import knn_graph
from atlas_assets.lib.layout import epochs_for, force_tables, optimize_layout
from atlas_assets.lib.project import project


def clusters(n_per: int = 150, n_clusters: int = 4, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * 3
    x = np.repeat(centres, n_per, axis=0) + rng.normal(size=(n_per * n_clusters, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def graph_and_init():
    from umap.umap_ import find_ab_params, fuzzy_simplicial_set

    x = clusters()
    knn = knn_graph(x, 15)
    n = len(x)
    indices = np.hstack([np.arange(n)[:, None], knn.indices])
    distances = np.hstack([np.zeros((n, 1), np.float32), knn.distances])
    graph, _, _ = fuzzy_simplicial_set(x, 16, 0, "cosine", knn_indices=indices, knn_dists=distances)
    init = np.random.default_rng(0).uniform(-10, 10, size=(n, 2)).astype(np.float32)
    a, b = find_ab_params(1.0, 0.1)
    return graph, init, float(a), float(b)


def test_same_seed_same_layout_on_one_thread_or_all(graph_and_init, monkeypatch) -> None:
    graph, init, a, b = graph_and_init
    monkeypatch.setattr(
        layout, "_PARALLEL_FROM", 0
    )  # small as it is, lay this graph out in parallel
    if numba.get_num_threads() < 2:
        pytest.skip("one core: there is no parallel layout to compare with the serial one")
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = optimize_layout(graph, init, a=a, b=b, n_epochs=60, seed=3)
    finally:
        numba.set_num_threads(threads)
    parallel = optimize_layout(graph, init, a=a, b=b, n_epochs=60, seed=3)
    np.testing.assert_array_equal(single, parallel)
    other = optimize_layout(graph, init, a=a, b=b, n_epochs=60, seed=4)
    assert not np.array_equal(parallel, other)


def test_inputs_are_left_untouched(graph_and_init) -> None:
    graph, init, a, b = graph_and_init
    data, start = graph.data.copy(), init.copy()
    optimize_layout(graph, init, a=a, b=b, n_epochs=5)  # prunes weak edges of its own copy
    np.testing.assert_array_equal(graph.data, data)
    np.testing.assert_array_equal(init, start)


def test_layout_separates_clusters(graph_and_init) -> None:
    graph, init, a, b = graph_and_init
    coords = optimize_layout(graph, init, a=a, b=b, n_epochs=200)
    labels = np.repeat(np.arange(4), 150)
    centres = np.array([coords[labels == c].mean(axis=0) for c in range(4)])
    spread = max(np.linalg.norm(coords[labels == c] - centres[c], axis=1).mean() for c in range(4))
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)[np.triu_indices(4, 1)]
    assert np.isfinite(coords).all() and gaps.min() > 2 * spread


def test_bad_init_shape_is_refused(graph_and_init) -> None:
    graph, init, a, b = graph_and_init
    with pytest.raises(ValueError, match="init must be"):
        optimize_layout(graph, init[:10], a=a, b=b, n_epochs=5)


def test_force_lookup_matches_umaps_gradients() -> None:
    a, b = 1.577, 0.895
    attract, repel = force_tables(a, b)
    for d2 in (1e-4, 1e-3, 0.1, 0.37, 1.0, 2.5, 10.0, 100.0, 1e4):
        want_a = -2 * a * b * d2 ** (b - 1) / (1 + a * d2**b)
        want_r = 2 * b / ((0.001 + d2) * (1 + a * d2**b))
        assert layout._force(attract, np.float32(d2)) == pytest.approx(want_a, rel=1e-4)
        assert layout._force(repel, np.float32(d2)) == pytest.approx(want_r, rel=1e-4)
    # Over the table's range the interpolation stays within 2e-4 of the gradients (its comment).
    d2 = np.geomspace(1e-4, 1e4, 4001)
    got_a = np.array([layout._force(attract, np.float32(v)) for v in d2])
    got_r = np.array([layout._force(repel, np.float32(v)) for v in d2])
    d2 = d2.astype(np.float32).astype(np.float64)  # the points the table was read at
    want_a = -2 * a * b * d2 ** (b - 1) / (1 + a * d2**b)
    want_r = 2 * b / ((0.001 + d2) * (1 + a * d2**b))
    assert np.abs(got_a / want_a - 1).max() < 2e-4
    assert np.abs(got_r / want_r - 1).max() < 2e-4
    # Outside the table: clamped to its ends, finite, and vanishing far away.
    assert np.isfinite(layout._force(attract, np.float32(0.0)))
    assert 0 <= layout._force(repel, np.float32(1e9)) < 1e-8


def test_epochs_follow_umap_learn() -> None:
    assert epochs_for(10_000) == 500 and epochs_for(10_001) == 200


def test_projection_keeps_neighbours() -> None:
    x = clusters(n_per=100, n_clusters=6, seed=1)
    coords = project(x, knn_graph(x, 30))
    assert trustworthiness(x, coords, n_neighbors=15) > 0.9


def test_fuzzy_graph_and_curve_match_umap_learn():
    """Our compiled-once fuzzy graph and curve fit give umap-learn's, on a graph with exact
    duplicates (distance 0), rows whose neighbours all lie at one distance and a padded row."""
    from umap.umap_ import find_ab_params, fuzzy_simplicial_set

    from atlas_assets.lib.project import curve_params, fuzzy_graph

    rng = np.random.default_rng(8)
    x = normalize(rng.normal(size=(400, 16)))
    x[1] = x[0]  # an exact duplicate
    graph = knn_graph(x, 14)
    n = len(x)
    indices = np.hstack([np.arange(n)[:, None], graph.indices])
    distances = np.hstack([np.zeros((n, 1), np.float32), graph.distances])
    distances[5, 1:] = distances[5, 1]  # every neighbour equally far
    indices[9, -2:], distances[9, -2:] = -1, np.inf  # a short list, padded
    ours = fuzzy_graph(indices, distances).toarray()
    theirs, _, _ = fuzzy_simplicial_set(
        x, 15, 0, "cosine", knn_indices=indices, knn_dists=distances
    )
    theirs = theirs.toarray()
    np.testing.assert_array_equal(ours > 0, theirs > 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours, ours.T)
    np.testing.assert_allclose(curve_params(1.0, 0.1), find_ab_params(1.0, 0.1), rtol=1e-6)
    np.testing.assert_allclose(curve_params(2.0, 0.5), find_ab_params(2.0, 0.5), rtol=1e-6)


@pytest.mark.parametrize(("n", "threads"), [(20_000, 2), (5_000, 4), (300, 2), (7, 1), (0, 2)])
def test_chunks_cover_every_point_once_and_shrink_towards_the_end(n: int, threads: int) -> None:
    bounds = layout._chunk_bounds(n, threads)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == n and (sizes > 0).all() == (n > 0)
    if threads > 1 and n:
        assert sizes.max() <= max(n // (threads * layout._CHUNKS_PER_THREAD), 1)
        assert (sizes[:-1] >= sizes[1:]).all()  # largest first: the epoch ends on small ones
        assert sizes[-1] <= layout._SMALLEST_CHUNK


@pytest.mark.parametrize("steps", [0, 1, 4])
def test_smoothing_is_subspace_iteration_on_any_number_of_threads(
    graph_and_init, steps: int
) -> None:
    """``project._smooth`` gives SciPy's products with the trivial vector projected out and
    NumPy's QR (up to the columns' signs), and the same to the bit on one thread or all."""
    from atlas_assets.lib.project import _smooth

    graph, init, _, _ = graph_and_init
    csr = graph.tocsr()
    root = np.sqrt(np.asarray(csr.sum(axis=1)).ravel())
    weights = scipy.sparse.diags(1 / root) @ csr @ scipy.sparse.diags(1 / root)
    step = ((weights + scipy.sparse.identity(csr.shape[0])) * 0.5).tocsr()
    trivial = root / np.linalg.norm(root)
    start = np.linalg.qr(init.astype(np.float64))[0]
    expected = start.copy()
    for _ in range(steps):
        expected = step @ expected
        expected -= np.outer(trivial, trivial @ expected)
        expected = np.linalg.qr(expected)[0]

    csr_weights = scipy.sparse.csr_matrix(weights)
    threads = numba.get_num_threads()
    results = []
    for count in sorted({1, threads}):
        numba.set_num_threads(count)
        try:
            coords = start.copy()
            _smooth(
                csr_weights.indptr, csr_weights.indices, csr_weights.data, trivial, coords, steps
            )
        finally:
            numba.set_num_threads(threads)
        results.append(coords)
    np.testing.assert_array_equal(results[0], results[-1])
    signs = np.sign((results[0] * expected).sum(axis=0))
    np.testing.assert_allclose(results[0] * signs, expected, atol=1e-9)
