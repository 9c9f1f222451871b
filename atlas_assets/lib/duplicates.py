"""Semantic duplicate detection over latent vectors (pure: no Dagster, no file I/O).

Two rows are duplicates when the cosine distance ``1 - cos`` between their normalised latent
vectors is at most ``cutoff``. Duplicate pairs are grouped into clusters by connected components;
each cluster of two or more keeps one "retention candidate" (lowest priority, by default the
first row in upload order) and marks the rest "deletion candidate"; every other row is a
"singleton" in a cluster of its own.

Search strategy, cheapest first:

1. Byte-identical vectors are grouped by hashing, so exact copies always share a cluster (even at
   ``cutoff=0``) and only distinct vectors are searched.
2. Pairs are read off the kNN graph (the map's shared one, a required argument). A row whose
   k-th neighbour is still within the cutoff may have more duplicates than the graph holds, so
   only those rows are range-searched: exactly (faiss ``IndexFlatIP.range_search``) up to
   ``exact_limit`` distinct vectors, beyond that by a partitioned search as in SemDeDup: k-means
   cells (``IndexIVFFlat``) with ``nprobe > 1`` so neighbouring cells are searched too.
   Approximate; ``benchmarks/duplicates.py`` measures its recall against an exact search.

Every candidate pair's distance is then recomputed on the normalised vectors, so all routes
decide "within the cutoff" the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from atlas_assets.lib.embed import normalize
from atlas_assets.lib.graph import KnnGraph
from atlas_assets.lib.tagstore import BaseTagStore

# The class names are part of the stored schema, so the store names them; re-exported here.
from atlas_assets.store.resources import (  # noqa: F401
    DELETION,
    DUPLICATE_CLASSES,
    RETENTION,
    SINGLETON,
)

# The derived tag that holds the last build's deletion candidates (``tag_duplicates``).
DUPLICATE_TAG = "duplicates: deletion candidates"

DEFAULT_EXACT_LIMIT = 100_000
# float32 dot products of unit vectors are off by ~1e-7; a distance this close to the cutoff
# counts as within it, so identical-but-rounded vectors are duplicates even at cutoff 0.
DISTANCE_TOLERANCE = 1e-6
# Searches use a looser radius, then every candidate's distance is recomputed the same way, so
# all search paths decide "within the cutoff" identically.
_SEARCH_SLACK = 1e-4
_BLOCK = 4096


@dataclass(frozen=True)
class DuplicateResult:
    """Per-row duplicate clusters and classes, plus every duplicate pair.

    ``cluster_id`` is ``(N,)`` int64, numbered 0.. in order of each cluster's first row;
    ``duplicate_class`` is ``(N,)`` object, one of ``DUPLICATE_CLASSES``; ``pairs`` has columns
    ``i``, ``j`` (row indices, ``i < j``, sorted) and ``distance`` (float32 cosine distance).
    """

    cluster_id: np.ndarray
    duplicate_class: np.ndarray
    pairs: pd.DataFrame

    @property
    def n_clusters(self) -> int:
        """Number of clusters with two or more rows."""
        return int(np.count_nonzero(self.duplicate_class == RETENTION))

    @property
    def n_deletion(self) -> int:
        """Number of deletion candidates."""
        return int(np.count_nonzero(self.duplicate_class == DELETION))

    def to_frame(self) -> pd.DataFrame:
        """``duplicate_class`` and ``cluster_id`` as a DataFrame in row order."""
        return pd.DataFrame(
            {"duplicate_class": self.duplicate_class, "cluster_id": self.cluster_id}
        )

    def __repr__(self) -> str:
        return (
            f"DuplicateResult({self.n_deletion} deletion candidates in {self.n_clusters} "
            f"clusters, {len(self.pairs)} pairs, {len(self.cluster_id)} rows)"
        )


def tag_deletion_candidates(store: BaseTagStore, ids: list[str]) -> None:
    """Make the derived tag :data:`DUPLICATE_TAG` of ``store`` hold exactly ``ids`` (created
    when first needed, so maps without duplicates get no empty tag)."""
    if ids or (store.exists() and DUPLICATE_TAG in store.counts()):
        store.replace_members(DUPLICATE_TAG, ids, description="set by duplicate detection")


# --------------------------------------------------------------------------------------------
# keep rules


def keep_priority(
    rule: str,
    *,
    texts: Sequence[str] | None = None,
    fields: pd.DataFrame | None = None,
    n: int | None = None,
) -> np.ndarray:
    """Turn a ``keep`` rule into a per-row rank: lower is retained first.

    Rules: ``"first"`` keeps the earliest row in upload order; ``"longest"`` the row with the
    longest text (characters; needs ``texts``); ``"max:<field>"`` / ``"min:<field>"`` the row
    with the largest / smallest value of a column of ``fields`` (missing values are retained
    last). Ties are always broken by upload order, so the result is a permutation of
    ``0..N-1``. ``n`` gives the row count for ``"first"`` when neither texts nor fields are given.
    """
    if rule == "first":
        size = _row_count(texts, fields, n, rule)
        return np.arange(size, dtype=np.int64)
    if rule == "longest":
        if texts is None:
            raise ValueError("keep='longest' needs the indexed texts")
        lengths = pd.Series([len(t) if isinstance(t, str) else 0 for t in texts], dtype="int64")
        return _rank(lengths, ascending=False)
    direction, _, field = rule.partition(":")
    if direction not in ("max", "min") or not field:
        raise ValueError(
            f"keep must be 'first', 'longest', 'max:<field>' or 'min:<field>', got {rule!r}"
        )
    if fields is None or field not in fields.columns:
        known = [] if fields is None else list(map(str, fields.columns))
        raise ValueError(f"keep={rule!r}: no field {field!r} (fields: {known})")
    return _rank(fields[field].reset_index(drop=True), ascending=direction == "min")


def _row_count(texts, fields, n, rule: str) -> int:
    for size in (n, None if texts is None else len(texts), None if fields is None else len(fields)):
        if size is not None:
            return int(size)
    raise ValueError(f"keep={rule!r} needs texts, fields or n to know the row count")


def _rank(values: pd.Series, *, ascending: bool) -> np.ndarray:
    # method="first" breaks ties by position, i.e. upload order; missing values go last.
    ranks = values.rank(method="first", ascending=ascending, na_option="bottom")
    return ranks.to_numpy(dtype=np.int64) - 1


# --------------------------------------------------------------------------------------------
# detection


def find_duplicates(
    latent: np.ndarray,
    cutoff: float = 0.1,
    *,
    knn: KnnGraph,
    priority: np.ndarray | None = None,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    nprobe: int = 8,
    n_cells: int | None = None,
    seed: int = 0,
) -> DuplicateResult:
    """Find semantic duplicates: rows whose normalised ``latent`` vectors are within ``cutoff``.

    ``cutoff`` is a cosine distance in ``[0, 2]`` (``ValueError`` otherwise). Pairs within it
    are grouped into clusters by connected components (so duplicates chain transitively). Keep
    rule: in each cluster of two or more, the row with the lowest ``priority`` is the
    "retention candidate" (ties and the default, ``priority=None``, fall back to upload order,
    i.e. the first row is kept; see ``keep_priority``) and the others are "deletion
    candidate"; rows without duplicates are "singleton" with a cluster of their own. Cluster ids
    are numbered in order of each cluster's first row, so results are deterministic.

    ``knn`` (the map's kNN graph over the same, normalised, vectors) is reused where it provably
    holds every pair; rows whose k-th neighbour is still within the cutoff are range-searched:
    exactly up to ``exact_limit`` distinct vectors, beyond that by a k-means partitioned search
    over ``n_cells`` cells (default ``~2 sqrt(N)``) probing ``nprobe`` of them per row.
    """
    cutoff = float(cutoff)
    if not 0.0 <= cutoff <= 2.0:  # also rejects NaN
        raise ValueError(f"cutoff must be a cosine distance in [0, 2], got {cutoff}")
    x = np.asarray(latent)
    if x.ndim != 2 or (x.shape[0] and not x.shape[1]):
        raise ValueError(f"latent must be a 2-D array with columns, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("latent contains NaN or infinite values")
    n = x.shape[0]
    prio = _check_priority(priority, n)
    if knn.indices.shape[0] != n:
        raise ValueError(f"knn graph has {knn.indices.shape[0]} rows, latent has {n}")
    if n == 0:
        return _empty_result()

    x = normalize(x)  # the latent asset's unit vectors are searched uncopied
    first, inverse = _unique_rows(x)  # first[u] = first row of distinct vector u
    xu = x if len(first) == n else x[first]  # no copy when every vector is distinct
    limit = cutoff + DISTANCE_TOLERANCE

    a, b = _pairs_from_graph(xu, inverse, knn, limit, exact_limit, nprobe, n_cells, seed)
    a, b, dist = _within(xu, a, b, limit)

    labels = _components(len(xu), a, b)[inverse]
    cluster_id = _renumber(labels)
    duplicate_class = _classes(cluster_id, prio)
    pairs = _expand_pairs(first, inverse, a, b, dist)
    return DuplicateResult(cluster_id=cluster_id, duplicate_class=duplicate_class, pairs=pairs)


def _check_priority(priority: np.ndarray | None, n: int) -> np.ndarray:
    if priority is None:
        return np.arange(n, dtype=np.int64)
    prio = np.asarray(priority)
    if prio.shape != (n,):
        raise ValueError(f"priority must have shape ({n},), got {prio.shape}")
    return prio


def _empty_result() -> DuplicateResult:
    return DuplicateResult(
        cluster_id=np.zeros(0, np.int64),
        duplicate_class=np.zeros(0, object),
        pairs=_pairs_frame(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)),
    )


def _unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First row of each distinct vector (in row order) and each row's distinct-vector id.

    Rows are hashed to 64 bits block by block and grouped by hash, then every row is checked
    byte-equal to its group's first, so the array is never copied or sorted (sorting the rows'
    bytes, as before, held two more copies of a 1M-row latent). A hash collision, which the
    check would catch, falls back to that sort.
    """
    _, first, inverse = np.unique(_row_hashes(x), return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    for start in range(0, len(x), _BLOCK):
        block = x[start : start + _BLOCK]
        if not (block == x[first[inverse[start : start + _BLOCK]]]).all():
            return _unique_rows_by_sorting(x)
    return _renumber_by_first(first, inverse)


def _row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit multilinear hash of each row's bytes (float32 rows), a block of rows at a time."""
    words = x.view(np.uint32)
    multipliers = np.random.default_rng(0).integers(1, 2**63, words.shape[1], np.uint64) | 1
    hashes = np.empty(len(x), np.uint64)
    for start in range(0, len(x), _BLOCK):
        block = words[start : start + _BLOCK].astype(np.uint64)
        hashes[start : start + _BLOCK] = (block * multipliers).sum(axis=1, dtype=np.uint64)
    return hashes


def _unique_rows_by_sorting(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1])))
    _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
    return _renumber_by_first(first, inverse.ravel())


def _renumber_by_first(first: np.ndarray, inverse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Renumber distinct vectors by first occurrence so later steps see them in upload order.
    order = np.argsort(first, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return first[order].astype(np.int64), remap[inverse].astype(np.int64)


def _flat_index(xu: np.ndarray):
    import faiss

    index = faiss.IndexFlatIP(xu.shape[1])
    index.add(xu)
    return index


def _range_pairs(index, queries: np.ndarray, query_ids: np.ndarray, limit: float):
    """Unordered candidate pairs ``(query id, hit)`` from ``index.range_search``, in blocks."""
    radius = 1.0 - limit - _SEARCH_SLACK  # faiss keeps inner products above the radius
    out_a, out_b = [], []
    for start in range(0, len(queries), _BLOCK):
        q = np.ascontiguousarray(queries[start : start + _BLOCK])
        lims, _, hits = index.range_search(q, radius)
        out_a.append(np.repeat(query_ids[start : start + _BLOCK], np.diff(lims.astype(np.int64))))
        out_b.append(hits.astype(np.int64))
    return _concat(out_a), _concat(out_b)


def _partitioned_pairs(
    xu: np.ndarray,
    query_ids: np.ndarray,
    limit: float,
    nprobe: int,
    n_cells: int | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate range search of ``xu[query_ids]`` in k-means cells (SemDeDup-style).

    Each query scans its ``nprobe`` nearest cells, so pairs split by a cell border are still
    found from either side unless both rows sit far from each other's cells.
    """
    import faiss

    m, d = xu.shape
    # ~2 sqrt(N) cells balance the k-means cost (grows with cells) against the scan cost
    # (each row scans nprobe / cells of the data).
    cells = n_cells or int(np.clip(2 * np.sqrt(m), 1, max(m // 20, 1)))
    cells = max(1, min(cells, m))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    # k-means on a sample of 20 points a cell: cells only need to be roughly right (nprobe > 1
    # covers their borders), and training then costs far less than the search itself.
    index.cp.min_points_per_centroid = 16
    index.cp.niter = 8
    rng = np.random.default_rng(seed)
    sample = xu if m <= cells * 20 else xu[np.sort(rng.choice(m, cells * 20, replace=False))]
    index.train(np.ascontiguousarray(sample))
    index.add(xu)
    index.nprobe = max(1, min(nprobe, cells))
    return _range_pairs(index, xu[query_ids], query_ids, limit)


def _pairs_from_graph(
    xu: np.ndarray,
    inverse: np.ndarray,
    knn: KnnGraph,
    limit: float,
    exact_limit: int,
    nprobe: int,
    n_cells: int | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs from the kNN graph, range-searching only the rows it may have cut off."""
    idx = np.asarray(knn.indices, dtype=np.int64)
    dist = np.asarray(knn.distances, dtype=np.float32)
    close = (idx >= 0) & (dist <= limit + _SEARCH_SLACK)
    rows = np.nonzero(close)[0]
    a, b = inverse[rows], inverse[idx[close]]
    # A full row (no -1 padding) whose farthest neighbour is within the cutoff may have more
    # duplicates beyond k: search those rows' vectors exhaustively (or partitioned, if huge).
    saturated = close[:, -1] if idx.shape[1] else np.zeros(len(idx), bool)
    if saturated.any():
        query_ids = np.unique(inverse[saturated])
        if len(xu) <= exact_limit:
            sa, sb = _range_pairs(_flat_index(xu), xu[query_ids], query_ids, limit)
        else:
            sa, sb = _partitioned_pairs(xu, query_ids, limit, nprobe, n_cells, seed)
        a, b = np.concatenate([a, sa]), np.concatenate([b, sb])
    return a, b


def _within(
    xu: np.ndarray, a: np.ndarray, b: np.ndarray, limit: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct candidate pairs ``a < b`` with recomputed distances within ``limit``."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    key = np.unique(lo[keep] * len(xu) + hi[keep])
    lo, hi = key // len(xu), key % len(xu)
    dist = np.empty(len(lo), np.float32)
    for start in range(0, len(lo), 65_536):  # chunks bound the gathered rows' memory
        s = slice(start, start + 65_536)
        dot = np.einsum("ij,ij->i", xu[lo[s]], xu[hi[s]])
        dist[s] = np.clip(1.0 - dot, 0.0, 2.0)
    keep = dist <= limit
    return lo[keep], hi[keep], dist[keep]


def _components(m: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(m, m))
    _, labels = connected_components(graph, directed=False)
    return labels


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Cluster ids 0.. in order of each cluster's first row (scipy's labels are arbitrary)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def _classes(cluster_id: np.ndarray, priority: np.ndarray) -> np.ndarray:
    n = len(cluster_id)
    sizes = np.bincount(cluster_id, minlength=int(cluster_id.max(initial=-1)) + 1)
    out = np.full(n, SINGLETON, dtype=object)
    dup = sizes[cluster_id] > 1
    out[dup] = DELETION
    # Within each cluster, the lowest priority (then the earliest row) is retained.
    order = np.lexsort((np.arange(n), priority, cluster_id))
    first_in_cluster = np.ones(n, bool)
    first_in_cluster[1:] = cluster_id[order][1:] != cluster_id[order][:-1]
    winners = order[first_in_cluster]
    out[winners[dup[winners]]] = RETENTION
    return out


def _expand_pairs(
    first: np.ndarray, inverse: np.ndarray, a: np.ndarray, b: np.ndarray, dist: np.ndarray
) -> pd.DataFrame:
    """Row pairs from distinct-vector pairs, plus the pairs among identical rows (distance 0)."""
    m = len(first)
    counts = np.bincount(inverse, minlength=m)
    if counts.max(initial=1) == 1:  # common case: no identical rows, ids map 1:1
        return _pairs_frame(first[a], first[b], dist)
    members = np.argsort(inverse, kind="stable")  # rows grouped by distinct vector
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def combos(ga: np.ndarray, gb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        na, nb = counts[ga], counts[gb]
        total = na * nb
        pair = np.repeat(np.arange(len(ga)), total)
        offset = np.arange(total.sum()) - np.repeat(np.cumsum(total) - total, total)
        ra = members[starts[ga][pair] + offset // nb[pair]]
        rb = members[starts[gb][pair] + offset % nb[pair]]
        return ra, rb, pair

    ra, rb, pair = combos(a, b)
    groups = np.nonzero(counts > 1)[0]
    sa, sb, _ = combos(groups, groups)
    keep = sa < sb
    i = np.concatenate([np.minimum(ra, rb), sa[keep]])
    j = np.concatenate([np.maximum(ra, rb), sb[keep]])
    d = np.concatenate([dist[pair], np.zeros(int(keep.sum()), np.float32)])
    return _pairs_frame(i, j, d)


def _pairs_frame(i: np.ndarray, j: np.ndarray, d: np.ndarray) -> pd.DataFrame:
    order = np.lexsort((j, i))
    return pd.DataFrame(
        {
            "i": i[order].astype(np.int64),
            "j": j[order].astype(np.int64),
            "distance": d[order].astype(np.float32),
        }
    )


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
