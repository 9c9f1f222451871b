"""The shared k-nearest-neighbour graph (faiss), computed once and reused downstream.

Vectors are L2-normalised, so inner product is cosine similarity and distances are cosine
distances ``1 - cos`` in ``[0, 2]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Up to this many rows an exact search costs about as much as HNSW and has perfect recall; at
# 20k rows it already took 8 s against HNSW's 1.7 s at 10-NN recall 0.98 (benchmarks/project.py).
EXACT_SEARCH_LIMIT = 10_000
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


def knn_graph(vectors: np.ndarray, k: int, *, exact_limit: int = EXACT_SEARCH_LIMIT) -> KnnGraph:
    """The ``k``-nearest-neighbour graph of normalised ``vectors``, excluding each row itself.

    Exact up to ``exact_limit`` rows; above, HNSW (see ``build_index``), from 50k rows visited in
    an order that keeps its memory reads local.
    """
    arr = _as_float32(vectors)
    n = arr.shape[0]
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if n <= exact_limit or n < _ORDER_FROM:
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
