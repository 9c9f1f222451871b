"""UMAP's 2-D layout optimisation, parallel on every core and still reproducible.

umap-learn's optimiser walks the graph's edges in one shared order and moves both ends at once,
so it is reproducible only on one thread; on several it races and each run differs. Here each
point is owned by one thread, which walks the point's own edges and moves only that point,
reading the other points where they stood at the start of the epoch. The result depends on the
seed alone, never on the number of threads or their scheduling.

Otherwise it is UMAP's objective and schedule: the curve ``1 / (1 + a d^2b)``, each edge sampled
in proportion to its membership strength, five negative samples per positive one, gradients
clipped at 4 and a learning rate decaying linearly to zero. Measured against ``umap.UMAP()`` in
``benchmarks/project.py``, three departures buy speed or trustworthiness:

* forces come from a table instead of two calls to ``pow``, which took most of the time;
* a sample's negatives all push from the same position, so their memory reads overlap instead
  of waiting on one another;
* a sampled edge pulls only the point that owns it; umap-learn also pulls the other end, so its
  points feel each attraction twice. Pulling once kept trustworthiness nearer umap-learn's
  (0.934 to 0.938 against 0.927 to 0.933 over seeds at 20k rows); clusters come out a little
  looser.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse

NEGATIVE_SAMPLE_RATE = 5
_CLIP = 4.0
# Forces are tabulated over t = d^2 / (1 + d^2), which maps [0, inf) onto [0, 1): one division
# finds the cell. 16k float32 cells per table keep both tables in the L2 cache.
_CELLS = 16_384
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment
# Below this many points an epoch is too short to share: the threads would mostly wait on each
# other, and on a busy machine a descheduled one stalls every epoch.
_PARALLEL_FROM = 5_000


def epochs_for(n_rows: int) -> int:
    """umap-learn's default number of epochs: 500 for small graphs, 200 above 10,000 rows."""
    return 500 if n_rows <= 10_000 else 200


def force_tables(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """UMAP's attraction and repulsion gradient coefficients on the grid ``t = d^2/(1+d^2)``."""
    t = np.arange(_CELLS + 1) / _CELLS
    # The ends are clamped: attraction diverges at d = 0 and both vanish as d grows.
    d2 = np.clip(t / np.maximum(1.0 - t, 1e-12), 1e-6, 1e12)
    d2b = d2**b
    attract = -2.0 * a * b * d2 ** (b - 1.0) / (1.0 + a * d2b)
    repel = 2.0 * b / ((0.001 + d2) * (1.0 + a * d2b))
    return attract.astype(np.float32), repel.astype(np.float32)


@numba.njit(inline="always", fastmath=True)
def _force(table, d2):
    pos = d2 / (1.0 + d2) * _CELLS
    k = min(int(pos), _CELLS - 1)  # t rounds to 1.0 for huge d^2
    return table[k] + (pos - k) * (table[k + 1] - table[k])


@numba.njit(inline="always")
def _clip(value):
    return min(max(value, -_CLIP), _CLIP)


@numba.njit(inline="always")
def _mix(x):
    # splitmix64's finaliser: a well-spread 64-bit hash, so every (seed, epoch, point) differs.
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(parallel=True, fastmath=True, cache=True)
def _epoch(
    before,
    after,
    indptr,
    neighbours,
    epochs_per_sample,
    next_sample,
    next_negative,
    attract,
    repel,
    alpha,
    epoch,
    seed,
):
    n = before.shape[0]
    for i in numba.prange(n):
        x = before[i, 0]
        y = before[i, 1]
        # Counter-based draws: each is a hash of (seed, epoch, point, counter), independent of the
        # previous one, so successive draws do not wait on each other.
        base = _mix(_mix(np.uint64(seed) * np.uint64(_GOLDEN) + np.uint64(epoch)) ^ np.uint64(i))
        counter = np.uint64(0)
        for e in range(indptr[i], indptr[i + 1]):
            if next_sample[e] > epoch:
                continue
            j = neighbours[e]
            dx = x - before[j, 0]
            dy = y - before[j, 1]
            d2 = dx * dx + dy * dy
            if d2 > 0.0:
                force = _force(attract, d2)
                x += _clip(force * dx) * alpha
                y += _clip(force * dy) * alpha
            next_sample[e] += epochs_per_sample[e]

            per_negative = epochs_per_sample[e] / NEGATIVE_SAMPLE_RATE
            n_negative = int((epoch - next_negative[e]) / per_negative)
            push_x = np.float32(0.0)
            push_y = np.float32(0.0)
            for _ in range(n_negative):
                counter += np.uint64(1)
                draw = _mix(base + counter * np.uint64(_GOLDEN))
                k = np.int64(((draw >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))
                if k == i:
                    continue
                dx = x - before[k, 0]
                dy = y - before[k, 1]
                d2 = dx * dx + dy * dy
                if d2 > 0.0:
                    force = _force(repel, d2)
                    push_x += _clip(force * dx)
                    push_y += _clip(force * dy)
            x += push_x * alpha
            y += push_y * alpha
            next_negative[e] += n_negative * per_negative
        after[i, 0] = x
        after[i, 1] = y


def optimize_layout(
    graph: scipy.sparse.spmatrix,
    init: np.ndarray,
    *,
    a: float,
    b: float,
    n_epochs: int,
    seed: int = 0,
    learning_rate: float = 1.0,
) -> np.ndarray:
    """Lay out the symmetric fuzzy graph ``graph`` (``N x N``) in 2-D, starting from ``init``.

    ``a`` and ``b`` are umap-learn's curve parameters (``umap.umap_.find_ab_params``). As in
    umap-learn, edges weaker than ``1 / n_epochs`` of the strongest are never sampled.
    """
    if init.ndim != 2 or init.shape[1] != 2 or init.shape[0] != graph.shape[0]:
        raise ValueError(f"init must be ({graph.shape[0]}, 2), got {init.shape}")
    csr = scipy.sparse.csr_matrix(graph, dtype=np.float64, copy=True)  # pruned in place below
    csr.data[csr.data < csr.data.max() / n_epochs] = 0.0
    csr.eliminate_zeros()
    csr.sort_indices()
    epochs_per_sample = csr.data.max() / csr.data  # umap-learn's make_epochs_per_sample
    next_sample = epochs_per_sample.copy()
    next_negative = epochs_per_sample / NEGATIVE_SAMPLE_RATE
    attract, repel = force_tables(a, b)
    before = np.array(init, dtype=np.float32, order="C")
    after = before.copy()
    indptr = csr.indptr.astype(np.int64)
    neighbours = csr.indices.astype(np.int64)
    threads = numba.get_num_threads()
    numba.set_num_threads(threads if len(before) >= _PARALLEL_FROM else 1)
    try:
        for epoch in range(n_epochs):
            alpha = np.float32(learning_rate * (1.0 - epoch / n_epochs))
            _epoch(
                before,
                after,
                indptr,
                neighbours,
                epochs_per_sample,
                next_sample,
                next_negative,
                attract,
                repel,
                alpha,
                epoch,
                seed,
            )
            before, after = after, before
    finally:
        numba.set_num_threads(threads)
    return before
