"""The shared k-nearest-neighbour graph, computed once and reused downstream.

Exact by blocked matrix products up to 10k rows, from there to 50k a search of nearby k-means
cells by matrix products, HNSW (faiss) beyond. Vectors are L2-normalised, so inner product is
cosine similarity and distances are cosine distances ``1 - cos`` in ``[0, 2]``.
"""

from __future__ import annotations

import os
import sys
import warnings
from functools import cache

import numba
import numpy as np
import scipy.sparse

from atlas_assets.lib.graph import KnnGraph

# Up to this many rows the graph is exact, for well under a second on any CPU (2 AMD EPYC
# cores: 0.15 s with bfloat16 products, 0.73 s in float32). Beyond, the cell search costs less
# even against bfloat16 products (20k rows: 0.49 s against 0.55 s, 30k: 0.85 s against 1.19 s)
# and finds 95 to 96% of the neighbours, as umap-learn's NN-descent does.
EXACT_SEARCH_LIMIT = 10_000
# Similarities in bfloat16 are off by at most 1.5 * 2^-8 (inputs rounded to 8 significant bits,
# so a unit-vector dot product moves by up to 2^-8, and the result rounded): every row within
# twice that, 2^_SLACK_EXPONENT, of the k-th largest is re-ranked in float32. That makes the
# graph exact unless more than _candidates(k) rows crowd that band (near-duplicates).
_SLACK_EXPONENT = -6
_PRODUCT_ROWS = 512
_CHUNK = 64
# From this many rows the HNSW graph is built and searched a k-means cell of rows at a time (see
# _locality_order): 100k rows took 9.9 s against 14.7 s; at 20k, where every vector fits the CPU
# cache anyway, the cells cost more (2.8 s against 1.9 s).
_ORDER_FROM = 50_000
_ORDER_CELLS = 256
_BLOCK_ROWS = 65_536
# Set to 0 to turn the bfloat16 products off on a CPU that has them (benchmarks measure the
# CPUs without them this way).
BF16_ENV = "ATLAS_KNN_BF16"
# The cell search (``_cell_search``), from EXACT_SEARCH_LIMIT rows to _ORDER_FROM: k-means cells
# of about _CELL_ROWS rows; each row names its _PROBE nearest cells, and each cell's rows are
# compared with every row of the cells its rows name (or whose rows name it); then each row's
# list is refined once from its first _REFINE neighbours' first _REFINE neighbours.
_CELL_ROWS = 256
_PROBE = 2
_REFINE = 10
_AXES_SAMPLE = 8_192  # rows that estimate the principal axes
_LANES = 16  # columns per chunk of _top_columns's first pass
_BISECTIONS = 12


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {arr.shape}")
    return arr


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (x86 AVX512-BF16, which every
    AMX CPU also has); elsewhere torch emulates them more slowly than float32. The environment
    variable ``ATLAS_KNN_BF16=0`` answers no, to measure or reproduce the portable path."""
    if os.environ.get(BF16_ENV, "").strip() == "0":
        return False
    return _cpu_has_bf16()


@cache
def _cpu_has_bf16() -> bool:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # a NumPy that moved it: stay on the portable path
        return False
    return bool(__cpu_features__.get("AVX512BF16"))


@cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finding the libraries takes milliseconds: once


def one_blas_thread():
    """A context in which BLAS (NumPy's OpenBLAS) runs on one thread. For the small products and
    decompositions around the searches and the layout: OpenBLAS's threads spin while they wait
    for each other, so on a busy machine two of them took 5 to 8 s over a 20k-row start that
    one thread did in 0.6 s (a 384 x 384 ``eigh``: 2.0 s against 0.1 s)."""
    return _blas_controller().limit(limits=1, user_api="blas")


@numba.njit(inline="always")
def _order_key(bits):
    """An int32 that orders bfloat16 values (given as their int16 bit patterns) as floats."""
    v = np.int32(bits)
    return v ^ ((v >> 15) & 0x7FFF)  # sign-magnitude to two's complement order


@numba.njit(inline="always")
def _slack(key):
    """2^_SLACK_EXPONENT in steps of the bfloat16 ``key``: values near it are 2^(exponent - 134)
    apart."""
    if key <= 0:
        return np.int32(1 << 15)  # a k-th similarity at or below zero: keep whatever fits
    return np.int32(1 << min(max(_SLACK_EXPONENT + 134 - ((key >> 7) & 0xFF), 0), 15))


@numba.njit(parallel=True, cache=True)
def _select(bits, first, k, out, tops, keys):
    """For each row of ``bits`` (a block of bfloat16 similarities viewed as int16), the columns
    whose similarity is within 2^_SLACK_EXPONENT of its k-th largest, at most ``out.shape[1]``
    of them (the largest), written to ``out[first + row]`` and padded with -1.

    Each row's maxima over chunks of ``_CHUNK`` columns come first, in one vectorised pass; the
    k-th largest of them is reached by k distinct values, so it bounds the row's k-th largest
    from below and only the few chunks near it are searched value by value. ``tops`` and
    ``keys`` are scratch rows, passed in because allocating inside the parallel loop is slow.
    """
    m = out.shape[1]
    width = bits.shape[1]
    full = width // _CHUNK
    chunks = (width + _CHUNK - 1) // _CHUNK
    for r in numba.prange(bits.shape[0]):
        row = bits[r]
        top = tops[r]
        best = keys[r]
        for c in range(full):
            peak = np.int32(-32768)
            for j in range(_CHUNK):  # a fixed trip count, so that it vectorises
                peak = max(peak, _order_key(row[c * _CHUNK + j]))
            top[c] = peak
        if chunks > full:
            peak = np.int32(-32768)
            for j in range(full * _CHUNK, width):
                peak = max(peak, _order_key(row[j]))
            top[full] = peak
        cols = out[first + r]
        best[:] = -32768
        for c in range(chunks):  # the k largest chunk maxima (cols only as scratch here)
            _insert(best[:k], top[c], cols, c)
        floor = best[k - 1] - _slack(best[k - 1]) - 1
        best[:] = -32768
        cols[:] = -1
        for c in range(chunks):
            if top[c] <= floor:
                continue
            for j in range(c * _CHUNK, min(c * _CHUNK + _CHUNK, width)):
                key = _order_key(row[j])
                if key > floor:
                    _insert(best, key, cols, j)
                    if best[m - 1] > floor:
                        floor = best[m - 1]
        kth = best[k - 1]
        for p in range(k, m):
            if best[p] < kth - _slack(kth):
                cols[p] = -1


@numba.njit(inline="always")
def _insert(keys, key, ids, id_):
    """Put ``key`` (with ``id_``) into the descending ``keys`` if it beats the last one there."""
    p = keys.shape[0] - 1
    if key <= keys[p]:
        return
    while p > 0 and keys[p - 1] < key:
        keys[p] = keys[p - 1]
        ids[p] = ids[p - 1]
        p -= 1
    keys[p] = key
    ids[p] = id_


# Reassociation lets the dot products vectorise; full fastmath would also assume no infinities,
# and the running lists start at -inf.
@numba.njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _rerank(vectors, candidates, indices, distances):
    """Each row's ``indices.shape[1]`` nearest ``candidates`` (``-1`` skipped) by float32 dot
    products, nearest first; candidates come in id order, so ties go to the lower id.

    Every product comes first; only those at or above a bound on the k-th largest
    (``_kth_bounds``) are then put in order, in id order: the same list as putting all in (the
    cell search's 78 candidates a row at 20k rows: 33 ms against 43 ms)."""
    k = indices.shape[1]
    for i in numba.prange(vectors.shape[0]):
        nearest = indices[i]
        sims = distances[i]  # similarities until the end
        nearest[:] = -1
        sims[:] = -np.inf
        dots = np.empty(candidates.shape[1], np.float32)
        ids = np.empty(candidates.shape[1], np.int64)
        valid = 0
        for c in range(candidates.shape[1]):
            j = candidates[i, c]
            if j < 0:
                continue
            acc = np.float32(0.0)
            for t in range(vectors.shape[1]):
                acc += vectors[i, t] * vectors[j, t]
            dots[valid] = acc
            ids[valid] = j
            valid += 1
        floor = _kth_bounds(dots, valid, k)[0] if valid > k else np.float32(-np.inf)
        for c in range(valid):
            if dots[c] >= floor:
                _insert(sims, dots[c], nearest, ids[c])
        for c in range(sims.shape[0]):
            sims[c] = 1.0 - sims[c]


def _candidates(k: int) -> int:
    """Rows re-ranked in float32 per row at most: the k nearest and as many again, plus 16."""
    return 2 * k + 16


def _similarity_blocks(vectors: np.ndarray, bf16: bool):
    """``(first row, similarities)`` for blocks of ``_PRODUCT_ROWS`` rows against every row, the
    similarities as bfloat16 bit patterns (int16): torch's bfloat16 products if ``bf16``, else
    NumPy's float32 ones truncated to bfloat16."""
    n = vectors.shape[0]
    if bf16:
        import torch

        with warnings.catch_warnings():
            # A memory-mapped latent is read-only; torch warns though this only reads it, once.
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            half = torch.from_numpy(vectors).to(torch.bfloat16)
        right = half.T.contiguous()
        for start in range(0, n, _PRODUCT_ROWS):
            yield start, (half[start : start + _PRODUCT_ROWS] @ right).view(torch.int16).numpy()
    else:
        for start in range(0, n, _PRODUCT_ROWS):
            sims = vectors[start : start + _PRODUCT_ROWS] @ vectors.T
            yield start, (sims.view(np.int32) >> 16).astype(np.int16)


def _exact_search(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``k`` nearest rows, itself included, by brute force in blocks of rows.

    Similarities rounded to bfloat16 pick the candidates of each row (see ``_SLACK_EXPONENT``),
    which are then ranked by float32 dot products: the exact graph, unless a crowd of
    near-duplicates fills the candidate list. On a CPU with bfloat16 in hardware the products
    themselves run in bfloat16 through torch (10k rows: 0.15 s against 0.73 s in float32),
    except where that would import torch (2 s) for at most ``EXACT_SEARCH_LIMIT`` rows: there
    NumPy's float32 products cost less. The choice changes the time, not the graph.
    """
    n = vectors.shape[0]
    m = min(_candidates(k), n)
    candidates = np.empty((n, m), np.int64)
    tops = np.empty((_PRODUCT_ROWS, -(-n // _CHUNK)), np.int32)
    keys = np.empty((_PRODUCT_ROWS, m), np.int32)
    bf16 = native_bf16() and (n > EXACT_SEARCH_LIMIT or "torch" in sys.modules)
    for start, bits in _similarity_blocks(vectors, bf16):
        _select(bits, start, k, candidates, tops, keys)
    candidates.sort(axis=1)  # so that ties re-rank in id order (the -1 pads first)
    indices = np.empty((n, k), np.int64)
    distances = np.empty((n, k), np.float32)
    _rerank(vectors, candidates, indices, distances)
    return indices, distances


def _spherical_kmeans(vectors: np.ndarray, cells: int, seed: int = 0) -> np.ndarray:
    """``cells`` unit centroids of ``vectors`` from ten k-means rounds on a seeded sample of 64
    rows a cell (NumPy only, so the same vectors and seed give the same cells)."""
    rng = np.random.default_rng(seed)
    n = vectors.shape[0]
    sample = vectors[np.sort(rng.choice(n, min(n, cells * 64), replace=False))]
    centroids = sample[rng.choice(sample.shape[0], cells, replace=False)]
    for _ in range(10):
        nearest = (sample @ centroids.T).argmax(axis=1)
        members = scipy.sparse.csr_matrix(
            (np.ones(len(nearest), np.float32), (nearest, np.arange(len(nearest)))),
            shape=(cells, len(nearest)),
        )
        sums = members @ sample  # each cell's sum, as a product (np.add.at is slow)
        empty = ~sums.any(axis=1)
        sums[empty] = centroids[empty]  # a cell that lost every row keeps its centroid
        centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return np.ascontiguousarray(centroids, dtype=np.float32)


@numba.njit(inline="always", fastmath={"nnan", "nsz", "reassoc"})
def _kth_bounds(vals, count, k):
    """``(lo, hi)``: at least ``k`` of ``vals[:count]`` (``count >= k``) are at or above ``lo``,
    fewer than ``k`` at or above ``hi``, and ``hi - lo`` is ``2^-_BISECTIONS`` of their range.
    A bisection whose counting loops vectorise: a third of the time of a quickselect, whose
    branches the CPU cannot predict."""
    lo = vals[0]
    hi = vals[0]
    for p in range(count):
        lo = min(lo, vals[p])
        hi = max(hi, vals[p])
    hi += abs(hi) * np.float32(1e-6) + np.float32(1e-30)  # above every value
    for _ in range(_BISECTIONS):
        mid = (lo + hi) * np.float32(0.5)
        above = 0
        for p in range(count):
            above += vals[p] >= mid
        if above >= k:
            lo = mid
        else:
            hi = mid
    return lo, hi


# No NaNs (similarities of finite unit vectors) is what lets the maxima and counts vectorise;
# nogil lets the cells run on several Python threads.
@numba.njit(nogil=True, fastmath={"nnan", "nsz", "reassoc"}, cache=True)
def _top_columns(sims, first, cols, out):
    """For each row ``r`` of the similarity block ``sims`` (columns: rows ``cols``), the ids of
    its ``out.shape[1]`` largest values into ``out[first + r]``, in no order (up to a tie band
    of ``2^-_BISECTIONS`` of the row's range; padded with -1).

    Two passes over the row instead of a sorted list it is merged into: the maxima of its
    ``_LANES``-column chunks bound the value it needs from below (``_kth_bounds``), and only
    chunks reaching that bound are gathered, branch-free. Chunk ``c`` is the strided columns
    ``c, c + chunks, c + 2 chunks, ...``, so the maxima are elementwise ones over contiguous
    runs (a quarter of the time of contiguous chunks, whose maxima each end in a horizontal
    step). Half the time of the sorted list, which shifted some 40 entries for each of some 250
    insertions a row.
    """
    width = out.shape[1]
    n_cols = sims.shape[1]
    chunks = (n_cols + _LANES - 1) // _LANES
    peaks = np.empty(chunks, np.float32)
    vals = np.empty(chunks * _LANES, np.float32)
    found = np.empty(chunks * _LANES, np.int64)
    for r in range(sims.shape[0]):
        row = sims[r]
        peaks[:] = row[:chunks]
        for t in range(1, _LANES):
            offset = t * chunks
            for c in range(min(chunks, n_cols - offset)):
                peaks[c] = max(peaks[c], row[offset + c])
        # ``width`` chunks reach ``floor``, so ``width`` values do: no value it drops is needed.
        floor = _kth_bounds(peaks, chunks, width)[0] if chunks > width else -np.inf
        count = 0
        for c in range(chunks):
            if peaks[c] >= floor:
                for j in range(c, n_cols, chunks):
                    vals[count] = row[j]
                    found[count] = cols[j]
                    count += row[j] >= floor
        target = out[first + r]
        if count <= width:
            target[:count] = found[:count]
            target[count:] = -1
            continue
        lo, hi = _kth_bounds(vals, count, width)
        kept = 0
        for p in range(count):  # fewer than ``width`` at or above ``hi``: all of them
            if vals[p] >= hi:
                target[kept] = found[p]
                kept += 1
        for p in range(count):  # then the band below it, to fill the row
            if kept == width:
                break
            if lo <= vals[p] < hi:
                target[kept] = found[p]
                kept += 1


def _search_cells(search, bounds, partner_bounds, partners, ids) -> None:
    """For each cell (rows ``bounds[c]:bounds[c + 1]`` of ``search``), the product of its rows
    with every row of its ``partners[partner_bounds[c]:partner_bounds[c + 1]]`` cells, and each
    row's best columns of it into ``ids`` (``_top_columns``).

    Cells run on as many Python threads as numba uses, each product on one BLAS thread: one
    thread owns a cell's rows, so no row is shared and the result does not depend on the
    scheduling. (BLAS called from numba's OpenMP threads warns that it may hang.)
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(cell: int) -> None:
        first, last = bounds[cell], bounds[cell + 1]
        if first == last:
            return
        named = partners[partner_bounds[cell] : partner_bounds[cell + 1]]
        cols = np.concatenate([np.arange(bounds[c], bounds[c + 1]) for c in named])
        _top_columns(search[first:last] @ search[cols].T, first, cols, ids)

    with one_blas_thread(), ThreadPoolExecutor(numba.get_num_threads()) as pool:
        list(pool.map(one, range(len(bounds) - 1)))


_REFINE_ROWS = 256  # rows per parallel task of _refine, each with its own marks


# Reassociation lets the dot products vectorise (the lists start at -inf: no full fastmath).
@numba.njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _refine(vectors, ids, best, width, out_ids, out_best):
    """One round of neighbour-of-neighbour search: each row's list (``ids``, similarities
    ``best``, descending) merged with the first ``width`` neighbours of its first ``width``
    neighbours, into ``out_*``. Reads only the old lists, so the result does not depend on the
    order rows are done in.

    Each candidate is compared once: ``seen`` marks the rows already in the list or already
    compared (a row reached through two neighbours, or compared and not kept, would not be kept
    the second time either). 20 ms against 52 for scanning the list for each candidate at 20k
    rows, with the same lists but for one row, where two similarities tied to the last bit.
    """
    n, k = ids.shape
    for task in numba.prange((n + _REFINE_ROWS - 1) // _REFINE_ROWS):
        seen = np.full(n, -1, np.int64)  # seen[j] == i: row j is known to row i's search
        for i in range(task * _REFINE_ROWS, min(n, (task + 1) * _REFINE_ROWS)):
            top = out_best[i]
            found = out_ids[i]
            top[:] = best[i]
            found[:] = ids[i]
            for c in range(k):
                if found[c] >= 0:
                    seen[found[c]] = i
            for a in range(min(width, k)):
                near = ids[i, a]
                if near < 0:
                    continue
                for b in range(min(width, k)):
                    j = ids[near, b]
                    if j < 0 or seen[j] == i:
                        continue
                    seen[j] = i
                    acc = np.float32(0.0)
                    for t in range(vectors.shape[1]):
                        acc += vectors[i, t] * vectors[j, t]
                    _insert(top, acc, found, j)


def _cell_search(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``_cell_searched`` over the vectors on their top ``_search_dims`` principal axes.

    The two large products (the axes' second moments and the reduction: 10 ms less at 20k rows
    on two threads) run on every BLAS thread; the search's own on one, as they are small (the
    cells' run on the search's threads, one product each)."""
    dims = _search_dims(vectors.shape[1])
    reduced = vectors @ _principal_axes(vectors, dims, seed) if dims < vectors.shape[1] else vectors
    with one_blas_thread():
        return _cell_searched(vectors, reduced, k, seed)


def _cell_searched(
    vectors: np.ndarray, reduced: np.ndarray, k: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``k`` nearest rows (itself included), approximately, by float32 matrix
    products between nearby k-means cells: the search from 10k rows to 50k.

    Cells, products and the rows' choices of cells all use ``reduced``, the vectors on their
    top ``_search_dims`` principal axes. Each row names its ``_PROBE`` nearest centroids, and
    each cell is compared whole with every cell that one of its rows names or whose rows name
    it, in parallel over cells, keeping ``_candidates(k)`` per row (``_top_columns``); float32
    dot products of the full vectors rank those (``_rerank``), and one round of
    neighbour-of-neighbour search (``_refine``) finds some of what the cells missed.

    On the benchmark's 20k real rows (MiniLM vectors of AG News, arXiv and Reuters) it finds
    96.1% of the exact 30 neighbours (four seeds: 95.7 to 96.5%) in 0.47 s on two idle AMD EPYC
    cores, where umap-learn's NN-descent finds 96.5% of 15 in 0.52 s. 96 axes instead of 128
    lost 2% of the neighbours.
    """
    n = vectors.shape[0]
    cells = max(n // _CELL_ROWS, 1)
    probe = min(_PROBE, cells)
    # The cells come from the reduced vectors too: a third of the work, 0.2% of the neighbours.
    centroids = _spherical_kmeans(reduced, cells, seed)
    nearest = np.empty((n, probe), np.int64)
    for start in range(0, n, _BLOCK_ROWS):
        _best_columns(reduced[start : start + _BLOCK_ROWS] @ centroids.T, nearest[start:])
    # Rows in cell order, so that each cell is a slice of ``ordered``.
    by_cell = np.argsort(nearest[:, 0], kind="stable")
    bounds = np.searchsorted(nearest[by_cell, 0], np.arange(cells + 1))
    ordered = vectors[by_cell]
    # Cell pairs (a, b) where a row of a names b, both ways round, sorted.
    own = np.repeat(nearest[:, :1], probe, axis=1).ravel()
    named = nearest.ravel()
    pairs = np.unique(np.concatenate([own * cells + named, named * cells + own]))
    partner_bounds = np.searchsorted(pairs // cells, np.arange(cells + 1))
    partners = pairs % cells

    search = reduced[by_cell]
    ids = np.empty((n, min(_candidates(k), n)), np.int64)
    _search_cells(search, bounds, partner_bounds, partners, ids)
    top_ids, top = np.empty((n, k), np.int64), np.empty((n, k), np.float32)
    _rerank(ordered, np.sort(ids, axis=1), top_ids, top)  # gives distances: back to similarities
    refined_ids, refined = np.empty_like(top_ids), np.empty_like(top)
    _refine(ordered, top_ids, 1.0 - top, _REFINE, refined_ids, refined)
    indices, distances = np.empty_like(refined_ids), np.empty_like(refined)
    _to_rows(by_cell, refined_ids, refined, indices, distances)
    return indices, distances


@numba.njit(parallel=True, cache=True)
def _best_columns(sims, out):
    """The ``out.shape[1]`` largest columns of each row of ``sims`` into ``out``'s first rows,
    largest first (ties to the lower column): a tenth of the time of NumPy's argpartition and
    argsort for a row's two nearest of 78 cells."""
    width = out.shape[1]
    for i in numba.prange(sims.shape[0]):
        best = np.full(width, -np.inf, np.float32)
        chosen = out[i]
        chosen[:] = -1
        for c in range(sims.shape[1]):
            _insert(best, sims[i, c], chosen, c)


@numba.njit(parallel=True, cache=True)
def _to_rows(by_cell, ids, sims, indices, distances):
    """The cell search's lists (rows and ids in cell order, similarities) as each row's list of
    row ids and cosine distances."""
    for p in numba.prange(ids.shape[0]):
        row = by_cell[p]
        for c in range(ids.shape[1]):
            j = ids[p, c]
            indices[row, c] = by_cell[j] if j >= 0 else -1
            distances[row, c] = 1.0 - sims[p, c]


@numba.njit(parallel=True, cache=True)
def _without_self(idx, dist):
    """Each row's list without the row itself (exact duplicates can tie with it, so wherever it
    is), or without its last entry where the row is not in it; distances at least 0."""
    n, width = idx.shape
    out_idx = np.empty((n, max(width - 1, 0)), np.int64)
    out_dist = np.empty((n, max(width - 1, 0)), np.float32)
    for i in numba.prange(n):
        skip = width - 1
        for c in range(width):
            if idx[i, c] == i:
                skip = c
                break
        kept = 0
        for c in range(width):
            if c != skip:
                out_idx[i, kept] = idx[i, c]
                out_dist[i, kept] = max(dist[i, c], np.float32(0.0))
                kept += 1
    return out_idx, out_dist


def _search_dims(dim: int) -> int:
    """Dimensions the cell search's products use: a third, at least 128 (MiniLM's 384 -> 128:
    recall 0.989 against 0.996 with every dimension at 9,600 rows, for a third of the products;
    96 lost another 2%)."""
    return min(dim, max(128, dim // 3))


def _principal_axes(vectors: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """``(d, dims)`` float32: the top eigenvectors of the second moments (not centred: these
    keep dot products best) of a seeded sample of ``vectors``' rows, which estimates them as
    well as all rows do."""
    rng = np.random.default_rng(seed)
    n = vectors.shape[0]
    sample = vectors[np.sort(rng.choice(n, min(n, _AXES_SAMPLE), replace=False))]
    moments = (sample.T @ sample).astype(np.float64)  # on every BLAS thread: 5 ms less
    with one_blas_thread():  # LAPACK's many small steps: see one_blas_thread
        _, axes = np.linalg.eigh(moments)
    return np.ascontiguousarray(axes[:, ::-1][:, :dims], dtype=np.float32)


def build_index(vectors: np.ndarray, *, exact_limit: int = EXACT_SEARCH_LIMIT):
    """A faiss inner-product index: exact up to ``exact_limit`` rows, HNSW above."""
    import faiss

    arr = _as_float32(vectors)
    dim = arr.shape[1]
    index = faiss.IndexFlatIP(dim) if arr.shape[0] <= exact_limit else _hnsw_index(dim)
    index.add(arr)
    return index


def _hnsw_index(dim: int):
    import faiss

    # M=16, efConstruction=40: half the build time of M=32/80 for 0.98 recall of the 15-NN.
    index = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.hnsw.efSearch = 64
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, cosine distances)`` of the ``k`` nearest indexed rows to each query."""
    q = _as_float32(queries)
    k = min(k, index.ntotal)
    if k <= 0:
        n = q.shape[0]
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    sims, idx = index.search(q, k)
    return idx.astype(np.int64), (1.0 - sims).astype(np.float32)


def _locality_order(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """A permutation of the rows that puts each k-means cell's rows next to each other.

    Adding rows to HNSW and searching them in this order keeps the graph nodes one query visits
    in the CPU cache for the next: on 400k rows search took 22 s against 99 s in upload order,
    and the build 36 s against 46 s, at the same recall. The cells cost a few seconds at 1M.
    """
    import faiss

    cells = int(min(_ORDER_CELLS, max(vectors.shape[0] // 64, 1)))
    kmeans = faiss.Kmeans(
        vectors.shape[1], cells, niter=10, seed=seed, spherical=True, max_points_per_centroid=64
    )
    kmeans.train(vectors)
    cell = np.empty(vectors.shape[0], np.int64)
    for start in range(0, vectors.shape[0], _BLOCK_ROWS):
        _, nearest = kmeans.index.search(vectors[start : start + _BLOCK_ROWS], 1)
        cell[start : start + _BLOCK_ROWS] = nearest.ravel()
    return np.argsort(cell, kind="stable")


def _hnsw_search_in_order(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``k`` nearest rows by HNSW, built and searched in ``_locality_order``, a block
    at a time so the permuted vectors are never copied whole."""
    order, index = _hnsw_in_order(vectors)
    return _search_in_order(index, vectors, order, k)


def _hnsw_in_order(vectors: np.ndarray):
    """``(order, index)``: the ``_locality_order`` of the rows and an HNSW index of them added
    in that order (index position ``p`` holds row ``order[p]``)."""
    order = _locality_order(vectors)
    index = _hnsw_index(vectors.shape[1])
    for start in range(0, len(order), _BLOCK_ROWS):
        index.add(vectors[order[start : start + _BLOCK_ROWS]])
    return order, index


def _search_in_order(
    index, vectors: np.ndarray, order: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``k`` nearest rows in the index of ``_hnsw_in_order``, searched in its order
    (benchmarks/dask_knn.py searches the same blocks as Dask tasks)."""
    idx = np.empty((len(order), k), np.int64)
    dist = np.empty((len(order), k), np.float32)
    for start in range(0, len(order), _BLOCK_ROWS):
        rows = order[start : start + _BLOCK_ROWS]
        found, found_dist = search(index, vectors[rows], k)
        idx[rows] = np.where(found >= 0, order[found], -1)  # index positions back to row ids
        dist[rows] = found_dist
    return idx, dist


def knn_graph(vectors: np.ndarray, k: int, *, exact_limit: int | None = None) -> KnnGraph:
    """The ``k``-nearest-neighbour graph of normalised ``vectors``, excluding each row itself.

    Exact up to ``exact_limit`` rows (default ``EXACT_SEARCH_LIMIT``, 10k). Above, up to 50k
    rows, the k-means cell search (``_cell_search``: 95 to 96% of the neighbours, as
    umap-learn's NN-descent finds); from 50k HNSW (see ``build_index``), visited in an order
    that keeps its memory reads local.
    """
    arr = _as_float32(vectors)
    n = arr.shape[0]
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if exact_limit is None:
        exact_limit = EXACT_SEARCH_LIMIT
    if n <= exact_limit:
        idx, dist = _exact_search(arr, min(k + 1, n))
    elif n < _ORDER_FROM:
        idx, dist = _cell_search(arr, min(k + 1, n))
    else:
        idx, dist = _hnsw_search_in_order(arr, min(k + 1, n))
    idx, dist = _without_self(idx, np.asarray(dist, np.float32))
    if idx.shape[1] < k:  # fewer rows than k + 1: pad so every graph has k columns
        pad = k - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
    return KnnGraph(indices=idx, distances=dist)
