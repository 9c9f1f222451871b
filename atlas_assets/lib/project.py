"""The 2-D projection: UMAP over the shared kNN graph, reproducible from its seed."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from atlas_assets.lib.knn import KnnGraph
from atlas_assets.lib.layout import epochs_for, optimize_layout

# UMAP needs a handful of neighbours; below this many rows the map is plain PCA.
_MIN_UMAP_ROWS = 8
_SMOOTHING_STEPS = 50
_BLOCK_ROWS = 65_536


def _principal_coords(latent: np.ndarray) -> np.ndarray:
    """``(N, 2)`` float64 coordinates on the first two principal components (zero-padded).

    Solved from the ``d x d`` covariance, summed over blocks of rows so a 1M-row latent is never
    copied; the components' signs are fixed, whatever LAPACK returns.
    """
    mean = latent.mean(axis=0, dtype=np.float64)
    scatter = np.zeros((latent.shape[1], latent.shape[1]))
    for start in range(0, latent.shape[0], _BLOCK_ROWS):
        block = latent[start : start + _BLOCK_ROWS]
        scatter += (block.T @ block).astype(np.float64)
    _, vectors = np.linalg.eigh(scatter - latent.shape[0] * np.outer(mean, mean))
    top = vectors[:, ::-1][:, :2]
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])
    coords = np.zeros((latent.shape[0], 2))
    coords[:, : top.shape[1]] = latent @ top.astype(np.float32) - (mean @ top).astype(np.float32)
    return coords


def _pca_2d(latent: np.ndarray) -> np.ndarray:
    if latent.shape[0] < 2:
        return np.zeros((latent.shape[0], 2), np.float32)
    return _principal_coords(latent).astype(np.float32)


def _initial_layout(latent: np.ndarray, graph: scipy.sparse.spmatrix, seed: int) -> np.ndarray:
    """A start for the layout: the vectors' first two principal components, smoothed over the graph.

    umap-learn starts from the graph's spectral embedding, which took seconds at 20k rows. Here the
    PCA start (one pass over the covariance) takes ``_SMOOTHING_STEPS`` steps of subspace
    iteration towards that embedding: enough to pull neighbours together. At 20k rows this lifted
    the final trustworthiness from 0.934 to 0.942 for 0.3 s (``benchmarks/project.py``); running
    on to convergence did no better. The result is scaled to umap-learn's box of +-10, with a
    little seeded noise to separate identical vectors.
    """
    coords = _principal_coords(latent)

    # Iterate with (I + D^-1/2 W D^-1/2) / 2, whose top eigenvector sqrt(degree) is projected out.
    root_degree = np.sqrt(np.maximum(np.asarray(graph.sum(axis=1)).ravel(), 1e-12))
    scale = scipy.sparse.diags(1.0 / root_degree)
    step = (scale @ graph @ scale + scipy.sparse.identity(graph.shape[0])).tocsr() * 0.5
    trivial = root_degree / np.linalg.norm(root_degree)
    coords *= root_degree[:, None]
    for _ in range(_SMOOTHING_STEPS):
        coords = step @ coords
        coords -= np.outer(trivial, trivial @ coords)
        coords, _ = np.linalg.qr(coords)
    coords /= root_degree[:, None]

    coords *= 10.0 / max(float(np.abs(coords).max()), 1e-12)
    noise = np.random.default_rng(seed).normal(scale=1e-4, size=coords.shape)
    return (coords + noise).astype(np.float32)


def project(
    latent: np.ndarray,
    knn: KnnGraph | None,
    *,
    n_neighbors: int = 15,
    n_epochs: int | None = None,
    min_dist: float = 0.1,
    spread: float = 1.0,
    seed: int | None = 0,
) -> np.ndarray:
    """``(N, 2)`` float32 map coordinates of unit vectors ``latent``.

    UMAP: umap-learn's fuzzy graph is built over ``knn`` (the same graph duplicates and topics
    use, so pynndescent never runs), started from the vectors' first two principal components
    smoothed over that graph, and laid out by ``atlas_assets.lib.layout``, which runs on every
    core and depends on ``seed`` alone (``seed=None`` draws a fresh one). Epochs default to
    umap-learn's (200 above 10k rows, else 500). Tiny inputs fall back to PCA.
    """
    n = latent.shape[0]
    if n < _MIN_UMAP_ROWS:
        return _pca_2d(latent)
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    k = min(n_neighbors, knn.k + 1, n - 1)
    # umap-learn expects each row's own index first, at distance 0.
    indices = np.hstack([np.arange(n)[:, None], knn.indices[:, : k - 1]])
    distances = np.hstack([np.zeros((n, 1), np.float32), knn.distances[:, : k - 1]])
    from umap.umap_ import find_ab_params, fuzzy_simplicial_set  # heavy (numba): only here

    graph, _, _ = fuzzy_simplicial_set(
        latent, k, seed, "cosine", knn_indices=indices, knn_dists=distances
    )
    a, b = find_ab_params(spread, min_dist)
    coords = optimize_layout(
        graph,
        _initial_layout(latent, graph, seed),
        a=float(a),
        b=float(b),
        n_epochs=n_epochs or epochs_for(n),
        seed=seed,
    )
    return coords
