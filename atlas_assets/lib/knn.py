"""The shared k-nearest-neighbour graph, computed once and reused downstream.

Exact by blocked matrix products up to tens of thousands of rows, HNSW (faiss) beyond. Vectors
are L2-normalised, so inner product is cosine similarity and distances are cosine distances
``1 - cos`` in ``[0, 2]``.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np

# Up to this many rows the exact search costs no more than HNSW, whose 15-NN recall is 0.93 to
# 0.96. With bfloat16 matrix products in hardware (AMX or AVX512-BF16) that holds to the second
# limit: 20k rows take 0.85 s against HNSW's 2.1 s, 30k 1.8 s against 3.0 s, 50k 6.6 s against
# 6.7 s; float32 products alone would take 2 s at 20k.
EXACT_SEARCH_LIMIT = 10_000
EXACT_SEARCH_LIMIT_BF16 = 50_000
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


@dataclass(frozen=True)
class KnnGraph:
    """Each row's ``k`` nearest other rows, nearest first.

    ``indices`` is ``(N, k)`` int64 (never the row itself; ``-1`` pads when fewer than ``k``
    neighbours exist) and ``distances`` the matching ``(N, k)`` float32 cosine distances.
    """

    indices: np.ndarray
    distances: np.ndarray

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {arr.shape}")
    return arr


@cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (x86 AVX512-BF16, which every
    AMX CPU also has); elsewhere torch emulates them more slowly than float32."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # a NumPy that moved it: stay on the portable path
        return False
    return bool(__cpu_features__.get("AVX512BF16"))


def default_exact_limit() -> int:
    """Rows up to which ``knn_graph`` searches exactly on this CPU."""
    return EXACT_SEARCH_LIMIT_BF16 if native_bf16() else EXACT_SEARCH_LIMIT


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
    whose similarity is within ``_SLACK`` of its k-th largest, at most ``out.shape[1]`` of them
    (the largest), written to ``out[first + row]`` and padded with -1.

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
    products, nearest first; candidates come in id order, so ties go to the lower id."""
    for i in numba.prange(vectors.shape[0]):
        nearest = indices[i]
        sims = distances[i]  # similarities until the end
        nearest[:] = -1
        sims[:] = -np.inf
        for c in range(candidates.shape[1]):
            j = candidates[i, c]
            if j < 0:
                continue
            acc = np.float32(0.0)
            for t in range(vectors.shape[1]):
                acc += vectors[i, t] * vectors[j, t]
            _insert(sims, acc, nearest, j)
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
    themselves run in bfloat16 through torch (0.5 s at 20k rows against 2 s in float32), except
    where that would import torch (2 s) for at most ``EXACT_SEARCH_LIMIT`` rows: there NumPy's
    float32 products cost less. The choice changes the time, not the graph.
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
    order = _locality_order(vectors)
    index = _hnsw_index(vectors.shape[1])
    for start in range(0, len(order), _BLOCK_ROWS):
        index.add(vectors[order[start : start + _BLOCK_ROWS]])
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

    Exact up to ``exact_limit`` rows (by default ``default_exact_limit()``: 50k rows where the
    CPU has bfloat16 in hardware, else 10k); above, HNSW (see ``build_index``), from 50k rows
    visited in an order that keeps its memory reads local.
    """
    arr = _as_float32(vectors)
    n = arr.shape[0]
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if exact_limit is None:
        exact_limit = default_exact_limit()
    if n <= exact_limit:
        idx, dist = _exact_search(arr, min(k + 1, n))
    elif n < _ORDER_FROM:
        idx, dist = search(build_index(arr, exact_limit=exact_limit), arr, min(k + 1, n))
    else:
        idx, dist = _hnsw_search_in_order(arr, min(k + 1, n))
    # Drop the row itself wherever it appears (exact duplicates can tie with it), else the last.
    is_self = idx == np.arange(n)[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, : max(idx.shape[1] - 1, 0)]
    idx = np.take_along_axis(idx, order, axis=1)
    dist = np.take_along_axis(dist, order, axis=1)
    if idx.shape[1] < k:  # fewer rows than k + 1: pad so every graph has k columns
        pad = k - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.inf)
    return KnnGraph(indices=idx, distances=np.maximum(dist, 0.0).astype(np.float32))
