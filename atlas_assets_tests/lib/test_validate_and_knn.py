"""Pure helpers: kNN graph, projection fallbacks, embedding, validation details."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from atlas_assets.lib.embed import embed_texts, model_key, normalize, text_hashes
from atlas_assets.lib.knn import knn_graph
from atlas_assets.lib.project import project


def unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    return normalize(rng.normal(size=(n, d)))


def test_normalize_keeps_unit_float32_rows_uncopied():
    rng = np.random.default_rng(3)
    x = normalize(rng.normal(size=(30, 8)) * 5)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    assert normalize(x) is x  # a 1M-row latent is not copied again
    assert normalize(x * 2) is not x and np.allclose(normalize(x * 2), x, atol=1e-6)
    zero = normalize(np.zeros((2, 3)))
    assert (zero == 0).all()


def test_knn_graph_excludes_self_and_matches_brute_force():
    rng = np.random.default_rng(0)
    vectors = unit(rng, 200)
    graph = knn_graph(vectors, 5)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1)[:, :5]
    assert graph.indices.shape == (200, 5) and graph.indices.dtype == np.int64
    assert (graph.indices != np.arange(200)[:, None]).all()
    np.testing.assert_array_equal(np.sort(graph.indices, 1), np.sort(expected, 1))
    np.testing.assert_allclose(
        graph.distances, 1 - np.take_along_axis(sims, expected, 1), atol=1e-5
    )


def test_knn_graph_with_exact_duplicates_and_tiny_inputs():
    vectors = normalize(np.array([[1.0, 0], [1.0, 0], [0, 1.0]]))
    graph = knn_graph(vectors, 4)
    assert graph.indices[0, 0] == 1 and graph.indices[1, 0] == 0
    assert graph.distances[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert (graph.indices[:, 2:] == -1).all()  # padded: only two other rows exist


def force_products(monkeypatch, bf16: bool, n: int) -> None:
    """Route ``knn_graph``'s exact search of ``n`` rows through torch's bfloat16 products or
    NumPy's float32 ones, whatever this CPU has."""
    from atlas_assets.lib import knn

    monkeypatch.setattr(knn, "native_bf16", lambda: bf16)
    monkeypatch.setattr(knn, "EXACT_SEARCH_LIMIT", 0 if bf16 else n)


@pytest.mark.parametrize("n", [130, 1_500])
@pytest.mark.parametrize("products", ["bfloat16", "float32"])
def test_knn_graph_exact_search_reranks_to_the_exact_graph(monkeypatch, n, products):
    """Candidates picked by similarities rounded to bfloat16, many of them near-ties, still give
    the exact float32 graph and distances: from torch's bfloat16 products (forced, whatever
    this CPU has) and from NumPy's float32 ones."""
    from atlas_assets.lib import knn

    force_products(monkeypatch, products == "bfloat16", n)
    rng = np.random.default_rng(5)
    # Tight clusters in 384-d, as sentence embeddings: neighbour similarities differ by less
    # than bfloat16's rounding step.
    centres = rng.normal(size=(10, 384))
    vectors = normalize(centres[rng.integers(0, 10, n)] + 0.3 * rng.normal(size=(n, 384)))
    k = 70  # more neighbours than 130 rows have 64-column chunks, and many near-ties at the k-th
    graph = knn.knn_graph(vectors, k, exact_limit=n)
    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    kth = -np.sort(-sims, axis=1)[:, k - 1 : k]
    found = np.take_along_axis(sims, graph.indices, 1)
    assert (graph.indices != np.arange(n)[:, None]).all()
    assert (np.diff(graph.distances, axis=1) >= 0).all()  # nearest first
    np.testing.assert_allclose(graph.distances, 1 - found, atol=1e-5)
    # Exact: every reported neighbour is at least as near as the true k-th (up to float32).
    assert (found >= kth - 1e-5).all()


def test_knn_graph_is_the_same_from_bfloat16_or_float32_products(monkeypatch):
    """Whether torch was loaded (so bfloat16 products) or not changes the time, never the map."""
    from atlas_assets.lib import knn

    rng = np.random.default_rng(6)
    centres = rng.normal(size=(5, 384))
    vectors = normalize(centres[rng.integers(0, 5, 800)] + 0.5 * rng.normal(size=(800, 384)))
    graphs = []
    for bf16 in (True, False):
        force_products(monkeypatch, bf16, 800)
        graphs.append(knn.knn_graph(vectors, 30, exact_limit=800))
    np.testing.assert_array_equal(graphs[0].indices, graphs[1].indices)
    np.testing.assert_array_equal(graphs[0].distances, graphs[1].distances)


# Run in a fresh interpreter: torch warns once per process, so in the suite an earlier test's
# warning would let a regression pass.
READ_ONLY_LATENT = """
import warnings
import numpy as np
from atlas_assets.lib import knn

knn.native_bf16 = lambda: True  # the bfloat16 products, through torch
knn.EXACT_SEARCH_LIMIT = 0
vectors = np.random.default_rng(7).normal(size=(300, 16)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
vectors.flags.writeable = False
with warnings.catch_warnings():
    warnings.simplefilter("error")
    graph = knn.knn_graph(vectors, 5)
assert graph.indices.shape == (300, 5)
"""


def test_knn_graph_reads_a_read_only_latent_without_warnings():
    """The pipeline hands over a read-only memory map; no torch warning reaches the run log."""
    run = subprocess.run([sys.executable, "-c", READ_ONLY_LATENT], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_hnsw_index_past_its_exact_limit_has_high_recall():
    """``build_index`` (the reader's vector search) is HNSW past ``exact_limit`` rows."""
    import faiss

    from atlas_assets.lib import knn

    rng = np.random.default_rng(1)
    vectors = unit(rng, 2000, 16)
    exact = knn_graph(vectors, 10)
    index = knn.build_index(vectors, exact_limit=100)
    assert isinstance(index, faiss.IndexHNSWFlat)
    found, distances = knn.search(index, vectors, 11)
    sims = np.einsum("nd,nkd->nk", vectors, vectors[found])
    np.testing.assert_allclose(distances, 1 - sims, atol=1e-5)
    recall = np.mean(
        [len(set(a) & set(b[1:])) / 10 for a, b in zip(exact.indices, found, strict=True)]
    )
    assert recall > 0.9


def test_knn_graph_in_locality_order_maps_back_to_row_ids(monkeypatch):
    from atlas_assets.lib import knn

    monkeypatch.setattr(knn, "_ORDER_FROM", 0)  # built and searched cell by cell, as from 50k
    monkeypatch.setattr(knn, "_BLOCK_ROWS", 300)  # and in several blocks
    rng = np.random.default_rng(2)
    vectors = unit(rng, 2000, 16)
    exact = knn_graph(vectors, 10)
    approx = knn_graph(vectors, 10, exact_limit=100)
    assert (approx.indices != np.arange(2000)[:, None]).all()
    # Each distance is the one between the row and the neighbour id it is reported with.
    sims = np.einsum("nd,nkd->nk", vectors, vectors[approx.indices])
    np.testing.assert_allclose(approx.distances, 1 - sims, atol=1e-5)
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(exact.indices, approx.indices, strict=True)]
    )
    assert recall > 0.9


def test_bf16_products_can_be_turned_off(monkeypatch):
    """``ATLAS_KNN_BF16=0`` puts a CPU with bfloat16 in hardware on the portable path."""
    from atlas_assets.lib import knn

    monkeypatch.setenv(knn.BF16_ENV, "0")
    assert not knn.native_bf16()
    monkeypatch.setenv(knn.BF16_ENV, "1")
    assert knn.native_bf16() == knn._cpu_has_bf16()


def clustered(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    """Unit vectors in 384-d, in 40 overlapping clusters, as sentence embeddings."""
    centres = rng.normal(size=(40, 384))
    return normalize(centres[rng.integers(0, 40, n)] + spread * rng.normal(size=(n, 384)))


def test_cell_search_finds_nearly_every_neighbour_with_true_distances(monkeypatch):
    """Rows past the exact limit are searched by k-means cells, with or without bfloat16 in
    hardware: the float64 brute force confirms the distances reported and that nearly all
    neighbours are found; the graph is the same on one thread or two."""
    import numba

    from atlas_assets.lib import knn

    monkeypatch.setattr(knn, "native_bf16", lambda: True)  # no other path on such CPUs either
    monkeypatch.setattr(knn, "_CELL_ROWS", 64)  # 46 cells, as 12k rows have
    searched = []
    real = knn._cell_search
    monkeypatch.setattr(knn, "_cell_search", lambda *a: searched.append(1) or real(*a))
    n, k = 3_000, 15
    vectors = clustered(np.random.default_rng(9), n, 0.6)
    graph = knn.knn_graph(vectors, k, exact_limit=1_000)
    assert searched  # the cell search ran, not HNSW

    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    truth = np.argsort(-sims, axis=1)[:, :k]
    assert graph.indices.shape == (n, k) and (graph.indices != np.arange(n)[:, None]).all()
    assert (np.diff(graph.distances, axis=1) >= 0).all()  # nearest first
    found = np.take_along_axis(sims, graph.indices, 1)
    np.testing.assert_allclose(graph.distances, 1 - found, atol=1e-5)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(graph.indices, truth, strict=True)])
    assert recall > 0.97

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        again = knn.knn_graph(vectors, k, exact_limit=1_000)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(again.indices, graph.indices)


@pytest.mark.parametrize("n_cols", [3, 78, 500, 8_300])
def test_top_columns_keeps_each_rows_largest_values(n_cols):
    """A cell's best columns per row: the largest values, up to ties within the bisection's
    band; a row with fewer columns than kept is padded with -1; ids are the given columns."""
    from atlas_assets.lib import knn

    rng = np.random.default_rng(n_cols)
    width, first = 78, 5
    sims = rng.normal(size=(40, n_cols)).astype(np.float32)
    sims[0] = 0.5  # all tied
    sims[1, : n_cols // 2] = sims[1, n_cols // 2 : 2 * (n_cols // 2)]  # pairs of ties
    cols = rng.permutation(10 * n_cols)[:n_cols]  # column ids, in no order
    out = np.full((first + 40, width), -7, np.int64)
    knn._top_columns(sims, first, cols, out)
    assert (out[:first] == -7).all()  # rows outside the block untouched
    position = {c: j for j, c in enumerate(cols)}
    for r in range(40):
        row = out[first + r]
        kept = row[row >= 0]
        assert len(kept) == min(width, n_cols) and len(set(kept)) == len(kept)
        assert (row[len(kept) :] == -1).all()
        values = sims[r, [position[c] for c in kept]]
        band = 1.01 * (sims[r].max() - sims[r].min()) / 2**knn._BISECTIONS
        kth = np.sort(sims[r])[::-1][len(kept) - 1]
        assert values.min() >= kth - band  # nothing kept from below the k-th largest value
        assert set(cols[sims[r] > kth + band]) <= set(kept)  # nor any larger value dropped


def test_best_columns_and_dropping_self_keep_numpys_order():
    """Each row's nearest cells, largest first with ties to the lower column, as a stable
    argsort gives; and each list without the row itself wherever it is, else without its last
    entry, distances clipped at 0."""
    from atlas_assets.lib import knn

    rng = np.random.default_rng(3)
    sims = rng.normal(size=(300, 78)).astype(np.float32)
    sims[0] = 1.0  # all tied
    sims[1, [4, 9]] = 5.0
    out = np.empty((300, 2), np.int64)
    knn._best_columns(sims, out)
    np.testing.assert_array_equal(out, np.argsort(-sims, axis=1, kind="stable")[:, :2])

    n = 50
    idx = np.array([rng.permutation(np.arange(n))[:6] for _ in range(n)])
    dist = rng.uniform(-1e-7, 1, size=(n, 6)).astype(np.float32)
    has_self = (idx == np.arange(n)[:, None]).any(axis=1)
    kept, kept_dist = knn._without_self(idx, dist)
    for i in range(n):
        order = [c for c in range(6) if idx[i, c] != i][:5]
        np.testing.assert_array_equal(kept[i], idx[i, order])
        np.testing.assert_array_equal(kept_dist[i], np.maximum(dist[i, order], 0))
    assert has_self.any() and not has_self.all()  # both cases met


def test_cell_search_refinement_finds_what_the_cells_missed(monkeypatch):
    """The neighbour-of-neighbour round only ever improves a row's list, and where neighbours
    straddle cells it finds some that the probed cells missed."""
    from atlas_assets.lib import knn

    monkeypatch.setattr(knn, "_CELL_ROWS", 64)
    monkeypatch.setattr(knn, "_PROBE", 2)  # too few cells on purpose
    vectors = unit(np.random.default_rng(10), 2_000, 6)  # no clusters: cells cut neighbourhoods
    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    truth = np.argsort(-sims, axis=1)[:, :11]  # self included, as _cell_search has it
    found = {}
    for width in (0, 10):
        monkeypatch.setattr(knn, "_REFINE", width)
        found[width] = knn._cell_search(vectors, 11)
    assert (found[10][1] <= found[0][1] + 1e-6).all()  # each row's i-th distance never worse
    recall = {
        width: np.mean([len(set(a) & set(b)) for a, b in zip(ids, truth, strict=True)]) / 11
        for width, (ids, _) in found.items()
    }
    assert recall[10] > recall[0] + 0.005


def test_project_small_inputs_fall_back_and_are_finite():
    rng = np.random.default_rng(2)
    for n in (0, 1, 3):
        vectors = unit(rng, n) if n else np.zeros((0, 8), np.float32)
        coords = project(vectors, knn_graph(vectors, 3) if n else None)
        assert coords.shape == (n, 2) and np.isfinite(coords).all()


def test_project_is_seeded():
    rng = np.random.default_rng(3)
    vectors = unit(rng, 60)
    graph = knn_graph(vectors, 15)
    first = project(vectors, graph, seed=7, n_epochs=50)
    again = project(vectors, graph, seed=7, n_epochs=50)
    assert first.shape == (60, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)


def test_embed_texts_real_model_normalised_and_deduplicated():
    texts = [
        "the cat sat on the mat",
        "quantum chromodynamics at the LHC",
        "the cat sat on the mat",
    ]
    vectors = embed_texts(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert vectors[0] @ vectors[1] < 0.5


def test_text_hashes_and_model_keys_are_stable():
    hashes = text_hashes(["a", "b", "a"])
    assert hashes[0] == hashes[2] != hashes[1] and len(hashes[0]) == 32
    # Pinned: both name cached vectors on disk, so a change would silently orphan every cache.
    assert hashes[0] == "27c35e6e9373877f29e562464e46497e"
    assert model_key("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2-07db4e1f"
    assert "/" not in model_key("org/model")


def test_project_unseeded_draws_a_fresh_seed():
    rng = np.random.default_rng(4)
    vectors = unit(rng, 60)
    graph = knn_graph(vectors, 15)
    first = project(vectors, graph, seed=None, n_epochs=30)
    second = project(vectors, graph, seed=None, n_epochs=30)
    assert first.shape == (60, 2) and np.isfinite(first).all()
    assert not np.array_equal(first, second)
