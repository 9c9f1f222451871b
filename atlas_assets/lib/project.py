"""The 2-D projection: UMAP over the shared kNN graph, reproducible from its seed."""

from __future__ import annotations

import warnings

import numba
import numpy as np
import scipy.linalg
import scipy.sparse

from atlas_assets.lib.graph import KnnGraph
from atlas_assets.lib.knn import one_blas_thread
from atlas_assets.lib.layout import epochs_for, optimize_layout

# UMAP needs a handful of neighbours; below this many rows the map is plain PCA.
_MIN_UMAP_ROWS = 8
_SMOOTHING_STEPS = 25
_PCA_SAMPLE = 8_192
_BLOCK_ROWS = 65_536
# A refresh (``project(initial=...)``): learning-rate scales of new rows and of old rows next to
# them (others stay put), and the share of the usual epochs. Chosen with benchmarks/refresh.py.
NEW_ROW_RATE = 0.25
OLD_ROW_RATE = 0.005
WARM_EPOCHS = 0.3


def _principal_coords(latent: np.ndarray) -> np.ndarray:
    """``(N, 2)`` float64 coordinates on the first two principal components (zero-padded).

    The components come from the ``d x d`` covariance of at most ``_PCA_SAMPLE`` rows (a fixed
    sample: as good a start, for a fraction of the products), so a 1M-row latent is never
    copied; their signs are fixed, whatever LAPACK returns.
    """
    n = latent.shape[0]
    rows = latent
    if n > _PCA_SAMPLE:
        rows = latent[np.sort(np.random.default_rng(0).choice(n, _PCA_SAMPLE, replace=False))]
    mean = rows.mean(axis=0, dtype=np.float64)
    scatter = (rows.T @ rows).astype(np.float64)  # on every BLAS thread: 5 ms less at 8k rows
    dim = scatter.shape[0]
    with one_blas_thread():  # LAPACK's many small steps: see knn.one_blas_thread
        # Only the top two eigenvectors: 4 ms against 12 for all 384.
        _, vectors = scipy.linalg.eigh(
            scatter - rows.shape[0] * np.outer(mean, mean),
            subset_by_index=[max(dim - 2, 0), dim - 1],
            driver="evr",
        )
    top = vectors[:, ::-1]
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])
    coords = np.zeros((n, 2))
    axes, offset = top.astype(np.float32), (mean @ top).astype(np.float32)
    for start in range(0, n, _BLOCK_ROWS):
        coords[start : start + _BLOCK_ROWS, : top.shape[1]] = (
            latent[start : start + _BLOCK_ROWS] @ axes - offset
        )
    return coords


@numba.njit(parallel=True, cache=True)
def _memberships(indices, distances, k):
    """umap-learn's ``smooth_knn_dist`` and ``compute_membership_strengths`` (local connectivity
    1, bandwidth 1) in one pass: each neighbour's membership ``exp(-(d - rho) / sigma)``, with
    ``rho`` the row's nearest non-zero distance and ``sigma`` found by bisection so that a row's
    memberships sum to ``log2(k)``. Column 0 is the row itself (membership 0), as in umap-learn.

    Ours because umap-learn's are compiled afresh in every process (5 s), these once per machine.
    """
    n, width = distances.shape
    target = np.log2(k)
    mean_all = distances.mean()
    out = np.zeros((n, width), np.float32)
    for i in numba.prange(n):
        rho = 0.0
        for j in range(width):
            if distances[i, j] > 0.0:
                rho = distances[i, j]
                break
        lo, hi, mid, bounded = 0.0, 0.0, 1.0, False
        for _ in range(64):
            total = 0.0
            for j in range(1, width):
                d = distances[i, j] - rho
                total += np.exp(-(d / mid)) if d > 0.0 else 1.0
            if abs(total - target) < 1e-5:
                break
            if total > target:
                hi, bounded = mid, True
                mid = (lo + hi) / 2.0
            else:
                lo = mid
                mid = (lo + hi) / 2.0 if bounded else mid * 2.0
        floor = 1e-3 * (distances[i].mean() if rho > 0.0 else mean_all)
        sigma = max(mid, floor)
        for j in range(width):
            neighbour = indices[i, j]
            if neighbour < 0 or neighbour == i:
                continue
            d = distances[i, j] - rho
            out[i, j] = 1.0 if d <= 0.0 or sigma == 0.0 else np.exp(-(d / sigma))
    return out


def fuzzy_graph(indices: np.ndarray, distances: np.ndarray) -> scipy.sparse.csr_matrix:
    """umap-learn's fuzzy simplicial set over a kNN graph whose column 0 is each row itself:
    directed memberships (``_memberships``), then their fuzzy union ``A + A^T - A * A^T``
    (``_fuzzy_union``)."""
    n, k = indices.shape
    vals = _memberships(indices, distances.astype(np.float32), float(k))
    return scipy.sparse.csr_matrix(_fuzzy_union(indices, vals), shape=(n, n))


@numba.njit(cache=True)
def _fuzzy_union(indices, vals):
    """``(data, indices, indptr)`` of ``A + A^T - A * A^T`` for the directed graph ``A`` with
    ``A[i, indices[i, c]] = vals[i, c]`` (entries of 0, such as -1 pads, absent), columns
    sorted: SciPy's sums and products, to the bit, a fifth of their time."""
    n, k = indices.shape
    # A^T as lists of (source, value) per row, sources ascending (the rows are read in order).
    reverse_ptr = np.zeros(n + 1, np.int64)
    for i in range(n):
        for c in range(k):
            if vals[i, c] > 0.0:
                reverse_ptr[indices[i, c] + 1] += 1
    reverse_ptr = np.cumsum(reverse_ptr)
    sources = np.empty(reverse_ptr[n], np.int64)
    reverse_vals = np.empty(reverse_ptr[n], np.float32)
    fill = reverse_ptr[:n].copy()
    for i in range(n):
        for c in range(k):
            if vals[i, c] > 0.0:
                j = indices[i, c]
                sources[fill[j]] = i
                reverse_vals[fill[j]] = vals[i, c]
                fill[j] += 1
    indptr = np.zeros(n + 1, np.int64)
    out_cols = np.empty(2 * reverse_ptr[n], np.int32)
    out_vals = np.empty(2 * reverse_ptr[n], np.float32)
    own_cols = np.empty(k, np.int64)
    own_vals = np.empty(k, np.float32)
    size = 0
    for i in range(n):
        own = 0  # the row's own entries, sorted by column
        for c in range(k):
            if vals[i, c] > 0.0:
                p = own
                while p > 0 and own_cols[p - 1] > indices[i, c]:
                    own_cols[p] = own_cols[p - 1]
                    own_vals[p] = own_vals[p - 1]
                    p -= 1
                own_cols[p] = indices[i, c]
                own_vals[p] = vals[i, c]
                own += 1
        a, b, last_b = 0, reverse_ptr[i], reverse_ptr[i + 1]
        while a < own or b < last_b:  # merge with A^T's row, both sorted by column
            if b == last_b or (a < own and own_cols[a] < sources[b]):
                out_cols[size] = own_cols[a]
                out_vals[size] = own_vals[a]
                a += 1
            elif a == own or sources[b] < own_cols[a]:
                out_cols[size] = sources[b]
                out_vals[size] = reverse_vals[b]
                b += 1
            else:
                x, y = own_vals[a], reverse_vals[b]
                out_cols[size] = own_cols[a]
                out_vals[size] = np.float32(x + y) - np.float32(x * y)
                a += 1
                b += 1
            size += 1
        indptr[i + 1] = size
    return out_vals[:size].copy(), out_cols[:size].copy(), indptr


def curve_params(spread: float, min_dist: float) -> tuple[float, float]:
    """umap-learn's ``find_ab_params``: ``a``, ``b`` of the curve ``1 / (1 + a d^2b)`` closest
    to 1 up to ``min_dist`` and ``exp(-(d - min_dist) / spread)`` beyond."""
    from scipy.optimize import curve_fit

    x = np.linspace(0, spread * 3, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    (a, b), _ = curve_fit(lambda d, a, b: 1.0 / (1.0 + a * d ** (2 * b)), x, y)
    return float(a), float(b)


def _pca_2d(latent: np.ndarray) -> np.ndarray:
    if latent.shape[0] < 2:
        return np.zeros((latent.shape[0], 2), np.float32)
    return _principal_coords(latent).astype(np.float32)


@numba.njit(inline="always")
def _remove_along(coords, column, direction):
    """``coords[:, column]`` minus its part along the unit vector ``direction``."""
    along = 0.0
    for i in range(coords.shape[0]):
        along += direction[i] * coords[i, column]
    for i in range(coords.shape[0]):
        coords[i, column] -= along * direction[i]


@numba.njit(inline="always")
def _normalise(coords, column):
    norm = 0.0
    for i in range(coords.shape[0]):
        norm += coords[i, column] * coords[i, column]
    if norm > 0.0:
        norm = 1.0 / np.sqrt(norm)
        for i in range(coords.shape[0]):
            coords[i, column] *= norm


@numba.njit(parallel=True, cache=True)
def _smooth(indptr, indices, weights, trivial, coords, steps):
    """``steps`` steps of subspace iteration on the ``(N, 2)`` ``coords``, in place: each the
    product with ``(I + W) / 2`` (``W``: the CSR ``indptr, indices, weights``), the unit vector
    ``trivial`` projected out, and the two columns made orthonormal (Gram-Schmidt).

    The products run in parallel by rows; the sums over rows stay on one thread, so the start
    does not depend on the number of threads. A third of the time of SciPy's products and
    NumPy's QR, which each step allocated afresh."""
    n = coords.shape[0]
    out = np.empty_like(coords)
    for _ in range(steps):
        for i in numba.prange(n):
            x = coords[i, 0]
            y = coords[i, 1]
            for p in range(indptr[i], indptr[i + 1]):
                x += weights[p] * coords[indices[p], 0]
                y += weights[p] * coords[indices[p], 1]
            out[i, 0] = 0.5 * x
            out[i, 1] = 0.5 * y
        coords, out = out, coords
        _remove_along(coords, 0, trivial)
        _normalise(coords, 0)
        _remove_along(coords, 1, trivial)
        _remove_along(coords, 1, coords[:, 0])
        _normalise(coords, 1)
    if steps % 2 == 1:  # the last step wrote the caller's scratch copy
        out[:] = coords


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
    csr = scipy.sparse.csr_matrix(graph)
    root_degree = np.sqrt(np.maximum(np.asarray(csr.sum(axis=1)).ravel(), 1e-12))
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    weights = csr.data / (root_degree[rows] * root_degree[csr.indices])
    trivial = root_degree / np.linalg.norm(root_degree)
    coords *= root_degree[:, None]
    _smooth(csr.indptr, csr.indices, weights, trivial, coords, _SMOOTHING_STEPS)
    coords /= root_degree[:, None]

    coords *= 10.0 / max(float(np.abs(coords).max()), 1e-12)
    noise = np.random.default_rng(seed).normal(scale=1e-4, size=coords.shape)
    return (coords + noise).astype(np.float32)


def warm_start(
    graph: scipy.sparse.csr_matrix, latent: np.ndarray, initial: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A refresh's start and per-point learning-rate scales (``optimize_layout(rates=...)``).

    Old rows (finite ``initial``) start where they were; a new row starts at the weighted mean
    of its placed neighbours in the fuzzy ``graph`` (repeated so placements spread into groups
    of new rows), else at the old row nearest in ``latent``, plus a little seeded noise. New rows
    move at ``NEW_ROW_RATE``, old rows next to a new one at ``OLD_ROW_RATE`` and the others not
    at all: what did not change stays put.
    """
    n = graph.shape[0]
    known = np.isfinite(initial).all(axis=1)
    coords = np.where(known[:, None], initial, 0.0).astype(np.float64)
    placed = known.copy()
    for _ in range(50):
        todo = np.flatnonzero(~placed)
        if todo.size == 0:
            break
        sub = graph[todo][:, placed]
        weight = np.asarray(sub.sum(axis=1)).ravel()
        ok = weight > 0
        if not ok.any():
            break
        mean = (sub @ coords[placed]) / np.maximum(weight, 1e-12)[:, None]
        coords[todo[ok]] = mean[ok]
        placed[todo[ok]] = True
    todo = np.flatnonzero(~placed)
    if todo.size:  # a group of new rows with no path to an old one: beside its nearest old row
        old = np.flatnonzero(known)
        for start in range(0, todo.size, 4096):
            block = todo[start : start + 4096]
            nearest = old[np.argmax(latent[block] @ latent[old].T, axis=1)]
            coords[block] = coords[nearest]
    new = ~known
    noise = np.random.default_rng(seed).normal(scale=1e-2, size=(int(new.sum()), 2))
    coords[new] += noise
    rates = np.zeros(n, np.float32)
    near_new = np.asarray(graph[:, new].sum(axis=1)).ravel() > 0
    rates[near_new] = OLD_ROW_RATE
    rates[new] = NEW_ROW_RATE
    return coords.astype(np.float32), rates


def layout_name(model: str | None) -> str:
    """The implementation that lays out the map for ``NomicProjectOptions.model``, as the
    ``projected`` asset records it: umap-learn (with its version) for ``"umap"``, else ours."""
    if model == "umap":
        from importlib.metadata import version

        return f"umap-learn {version('umap-learn')}"
    return "atlas-assets"


def _neighbours(knn: KnnGraph, n_neighbors: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_neighbors`` columns of UMAP's kNN input: each row itself at distance 0 (as
    umap-learn has it), then its nearest rows from ``knn``.

    The ``knn_graph`` asset keeps ``max(30, n_neighbors - 1)`` neighbours from the same options,
    so the pipeline always has enough; a graph with fewer is refused rather than silently giving
    a map with fewer neighbours than asked for.
    """
    k = min(n_neighbors, n - 1)
    if knn.k + 1 < k:
        raise ValueError(
            f"n_neighbors={n_neighbors} needs {k - 1} neighbours per row, but the kNN graph "
            f"holds {knn.k}: rebuild the knn_graph asset (it keeps max(30, n_neighbors - 1))"
        )
    indices = np.hstack([np.arange(n)[:, None], knn.indices[:, : k - 1]])
    distances = np.hstack([np.zeros((n, 1), np.float32), knn.distances[:, : k - 1]])
    return indices, distances


def _umap_learn(
    latent: np.ndarray,
    indices: np.ndarray,
    distances: np.ndarray,
    *,
    n_epochs: int | None,
    min_dist: float,
    spread: float,
    seed: int | None,
) -> np.ndarray:
    """umap-learn's ``UMAP`` over our kNN graph (its ``precomputed_knn``), so only its fuzzy
    graph, spectral start and layout run; ``random_state=seed`` (a seeded umap-learn lays out on
    one thread)."""
    import umap

    reducer = umap.UMAP(
        n_neighbors=indices.shape[1],
        n_epochs=n_epochs,
        min_dist=min_dist,
        spread=spread,
        metric="cosine",
        random_state=seed,
        precomputed_knn=(indices, distances),
    )
    with warnings.catch_warnings():
        # Without pynndescent's index it cannot transform() new points, which nothing here does;
        # and a seed turns its parallelism off, which is what a seed asks for.
        warnings.filterwarnings("ignore", "precomputed_knn\\[2\\]", UserWarning)
        warnings.filterwarnings("ignore", "n_jobs value", UserWarning)
        coords = reducer.fit_transform(latent)
    return np.ascontiguousarray(coords, dtype=np.float32)


def project(
    latent: np.ndarray,
    knn: KnnGraph | None,
    *,
    n_neighbors: int = 15,
    n_epochs: int | None = None,
    min_dist: float = 0.1,
    spread: float = 1.0,
    seed: int | None = 0,
    model: str | None = None,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """``(N, 2)`` float32 map coordinates of unit vectors ``latent``.

    UMAP over ``knn``, the graph duplicates and topics use too, so no other neighbour search
    runs; it must hold at least ``n_neighbors - 1`` neighbours per row (else ``ValueError``).
    Tiny inputs (under 8 rows) fall back to PCA.

    ``model`` picks the implementation (``NomicProjectOptions.model``):

    * ``None``, ``"nomic-project-v1"``, ``"nomic-project-v2"``: ours. umap-learn's fuzzy graph
      (``fuzzy_graph``), a start from the vectors' first two principal components smoothed over
      that graph, and ``atlas_assets.lib.layout``'s optimiser, which runs on every core and
      depends on ``seed`` alone (``seed=None`` draws a fresh one). Epochs default to
      umap-learn's (200 above 10k rows, else 500).
    * ``"umap"``: umap-learn itself (``umap.UMAP(precomputed_knn=...)``, same parameters,
      ``random_state=seed``), the reference implementation, with its spectral start. It costs
      more: umap-learn's numba functions are compiled afresh in every process, and a seeded
      umap-learn lays out on one thread. On 2,000 arXiv abstracts it took 6.8 s the first time
      in a process and 1.5 s after, against our 0.25 s, for trustworthiness@15 0.943 against
      our 0.950.

    ``initial`` (a refresh; ours only, ``"umap"`` lays out afresh) is ``(N, 2)``: each row's
    coordinates in the previous map, NaN for new rows (``lib.refresh.aligned_coords``). The
    layout then starts from it (``warm_start``): old rows far from any new row stay exactly
    where they were, new rows and their neighbours move, for ``WARM_EPOCHS`` of the epochs,
    so the map neither rotates, mirrors nor jumps. Without a new row it is returned as it is.
    """
    n = latent.shape[0]
    if initial is not None:
        initial = np.asarray(initial, dtype=np.float32)
        if initial.shape != (n, 2):
            raise ValueError(f"initial must have shape ({n}, 2), got {initial.shape}")
        if model == "umap" or not np.isfinite(initial).all(axis=1).any():
            initial = None  # umap-learn has no warm start here; nothing to keep
        elif np.isfinite(initial).all():
            return initial.copy()  # no new row: the map stays as it was
    if n < _MIN_UMAP_ROWS:
        return _pca_2d(latent)
    indices, distances = _neighbours(knn, n_neighbors, n)
    if model == "umap":
        return _umap_learn(
            latent,
            indices,
            distances,
            n_epochs=n_epochs,
            min_dist=min_dist,
            spread=spread,
            seed=seed,
        )
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    graph = fuzzy_graph(indices, distances)
    a, b = curve_params(spread, min_dist)
    if initial is not None:
        start, rates = warm_start(graph, latent, initial, seed)
        epochs = n_epochs or epochs_for(n)
        return optimize_layout(
            graph,
            start,
            a=a,
            b=b,
            n_epochs=max(1, round(epochs * WARM_EPOCHS)),
            seed=seed,
            rates=rates,
        )
    return optimize_layout(
        graph,
        _initial_layout(latent, graph, seed),
        a=a,
        b=b,
        n_epochs=n_epochs or epochs_for(n),
        seed=seed,
    )
