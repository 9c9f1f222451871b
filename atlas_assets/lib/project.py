"""The 2-D projection: UMAP fed the shared kNN graph, seeded."""

from __future__ import annotations

import warnings

import numpy as np

from atlas_assets.lib.knn import KnnGraph

# umap-learn's spectral initialisation needs a handful of points; below this we use PCA.
_MIN_UMAP_ROWS = 8


def _pca_2d(latent: np.ndarray) -> np.ndarray:
    if latent.shape[0] < 2:
        return np.zeros((latent.shape[0], 2), np.float32)
    centred = latent - latent.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = np.zeros((centred.shape[0], 2), np.float32)
    comps = centred @ vt[:2].T
    out[:, : comps.shape[1]] = comps
    return out


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

    UMAP's own neighbour search is replaced by ``knn`` (the same graph duplicates and topics use),
    which also skips pynndescent's JIT compile. The spectral initialisation is umap-learn's
    ``"tswspectral"`` (the same Laplacian eigenvectors, solved from a truncated-SVD warm start):
    on 20k text vectors it halved the initialisation's CPU time at the same trustworthiness
    (``benchmarks/project.py``). Epochs default to umap-learn's (200 above 10k rows, else 500).
    ``seed=None`` lays out on every core, not reproducibly. Tiny inputs fall back to PCA.
    """
    n = latent.shape[0]
    if n < _MIN_UMAP_ROWS:
        return _pca_2d(latent)
    k = min(n_neighbors, knn.k + 1, n - 1)
    # umap-learn expects each row's own index first, at distance 0.
    indices = np.hstack([np.arange(n)[:, None], knn.indices[:, : k - 1]])
    distances = np.hstack([np.zeros((n, 1), np.float32), knn.distances[:, : k - 1]])
    import umap  # heavy (numba JIT): imported only here

    reducer = umap.UMAP(
        n_neighbors=k,
        n_components=2,
        metric="cosine",
        init="tswspectral",
        n_epochs=n_epochs,
        min_dist=min_dist,
        spread=spread,
        random_state=seed,
        n_jobs=1 if seed is not None else -1,  # a seeded layout is single-threaded anyway
        precomputed_knn=(indices, distances, None),
        verbose=False,
    )
    with warnings.catch_warnings():
        # Expected here: seeding disables parallelism; a precomputed graph disables transform().
        warnings.filterwarnings("ignore", message=".*(random_state|knn_search_index).*")
        return reducer.fit_transform(latent).astype(np.float32)
