"""Hierarchical topic model over the shared kNN graph: clusters, keywords and labels.

Pure computation (no Dagster, no file I/O). The tree is built top-down:

* depth 1 is a Louvain partition of the symmetrised kNN graph at a low resolution, so its
  communities are broad; each deeper level re-runs Louvain on the subgraph induced by one
  parent topic, so children always nest inside their parent and refine it.
* Communities smaller than a size floor that scales with the number of rows being split are
  treated as noise and dissolved: their rows join the topic most of their kNN neighbours are in
  (falling back to the nearest centroid), so no datum is ever dropped.
* Keywords are class-based TF-IDF of each topic's texts against its siblings (stop words
  removed); labels come from a replaceable ``labeller``.

Why Louvain on the kNN graph rather than HDBSCAN on the map: HDBSCAN with a fixed
``min_cluster_size`` is known (from the issue; not re-measured here) to collapse real text
maps to a couple of clusters or to leave a large share of points as noise, whereas graph
communities partition every row and, because UMAP is built from the same kNN graph, show up
as contiguous regions of the 2-D map. See ``benchmarks/topics.py`` for the measurements
behind the parameters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlas_assets.lib.knn import KnnGraph

Labeller = Callable[[list[str], list[str]], str]

TOPIC_COLUMNS = ["topic_id", "depth", "parent_id", "label", "keywords", "size"]
N_KEYWORDS = 10
N_CENTRAL = 5
# Louvain resolution per depth, chosen with benchmarks/topics.py (the sweep ran on networkx's
# Louvain; igraph's gives arXiv depth 2 NMI 0.578 at 0.5). Below 1 favours fewer, larger
# communities. On arXiv, depth 2 at 1.0 gives 23 topics and loses to k-means told the 18
# archives (NMI 0.518 vs 0.541); at 0.5 it gives 9 and wins (0.571). On BBC, depth 1 at 0.5
# gives 6 topics for the 5 sections (NMI 0.82); at 1.0 it gives 9 (0.76). Depth 3 uses 1.0 so
# the finest level actually refines (arXiv: 43 topics vs 17 at 0.5, NMI 0.574 vs 0.548).
DEFAULT_RESOLUTIONS = (0.5, 0.5, 1.0)


@dataclass(frozen=True)
class TopicTree:
    """A topic hierarchy over ``N`` rows.

    ``assignments`` is ``(N, D)`` int64: column ``d - 1`` holds each row's topic id at depth
    ``d``. Column 0 is never ``-1``; a deeper column is ``-1`` only where the row's topic at the
    level above has no subtopics. ``topics`` has one row per topic with columns ``topic_id``
    (unique across depths), ``depth`` (1..D), ``parent_id`` (``-1`` at depth 1), ``label``
    (unique within a depth), ``keywords`` (list of up to 10 strings) and ``size``.
    """

    assignments: np.ndarray
    topics: pd.DataFrame

    @property
    def depth(self) -> int:
        return int(self.assignments.shape[1])


# ---------------------------------------------------------------------------------------------
# Labels


def _title(word: str) -> str:
    # Keep acronyms and mixed-case words as they are; title-case plain lowercase words.
    return word[:1].upper() + word[1:] if word.islower() else word


def _same_stem(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    short, long = sorted((a, b), key=len)
    return len(short) >= 4 and long.startswith(short[: max(4, len(short) - 1)])


def keyword_labeller(keywords: list[str], central_texts: list[str]) -> str:
    """A short label from a topic's keywords: the 3 best, title-cased, joined by ", ".

    Among the top keywords, those that occur in more of the topic's most central texts are
    preferred (ties keep the c-TF-IDF order), so the label describes the topic's core rather
    than its fringe. A language-model labeller can replace this function.
    """
    if not keywords:
        return "Miscellaneous"
    lowered = [t.lower() for t in central_texts]
    pool: list[str] = []
    for word in keywords:  # skip inflections of a word already in: "algebra" after "algebras"
        if not any(_same_stem(word, kept) for kept in pool):
            pool.append(word)
        if len(pool) == 6:
            break
    hits = [sum(1 for t in lowered if re.search(rf"\b{re.escape(k.lower())}\b", t)) for k in pool]
    ranked = sorted(range(len(pool)), key=lambda i: (-hits[i], i))[:3]
    return ", ".join(_title(pool[i]) for i in sorted(ranked))


def _unique_labels(labels: list[str]) -> list[str]:
    """Suffix repeats with " (2)", " (3)", ... in order, avoiding clashes with other labels."""
    taken = set(labels)
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        count = seen.get(label, 0) + 1
        seen[label] = count
        if count == 1:
            out.append(label)
            continue
        n = count
        while f"{label} ({n})" in taken:
            n += 1
        new = f"{label} ({n})"
        taken.add(new)
        seen[label] = n
        out.append(new)
    return out


# ---------------------------------------------------------------------------------------------
# Keywords (class-based TF-IDF)


# Words that say how a text is written, not what it is about: they made labels like
# "Paper, Group, Polynomial" (arXiv) or "Labour, Election, Mr" (BBC).
GENERIC_WORDS = frozenset(
    (  # noqa: SIM905 (a word list reads best as words)
        "paper papers article study studies result results show shows shown present presented "
        "propose proposed using use used new mr mrs ms said says also"
    ).split()
)


def _doc_term(texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
    """Unigram counts without English stop words and generic words; empty vocabulary gives
    zero columns."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    n = len(texts)
    # min_df=2 drops one-off tokens (typos, ids) once there are enough documents to afford it.
    vec = CountVectorizer(
        stop_words=sorted(ENGLISH_STOP_WORDS | GENERIC_WORDS),
        token_pattern=r"(?u)\b[^\W\d_][\w'-]*[^\W_]\b",
        min_df=2 if n >= 50 else 1,
        max_df=1.0,
        dtype=np.float32,
    )
    try:
        X = vec.fit_transform([t if isinstance(t, str) else "" for t in texts])
    except ValueError:  # only stop words or no tokens at all
        return sp.csr_matrix((n, 0), dtype=np.float32), np.array([], dtype=object)
    return X.tocsr(), vec.get_feature_names_out()


def _ctfidf_keywords(
    X: sp.csr_matrix, vocab: np.ndarray, groups: list[np.ndarray], n: int = N_KEYWORDS
) -> list[list[str]]:
    """Top ``n`` c-TF-IDF words of each group of rows, contrasted with the other groups.

    BERTopic's formulation: ``tf(t, c) / |c| * log(1 + A / f(t))`` with ``A`` the mean word
    count per class and ``f(t)`` the term's frequency over all the given classes. Term
    frequency is square-rooted so a few very frequent words do not crowd out specific ones,
    and the score is weighted by the share of the term's occurrences that fall in the class, so
    words common to all siblings ("said", "paper") give way to the ones that set a class apart.
    """
    if X.shape[1] == 0 or not groups:
        return [[] for _ in groups]
    counts = np.vstack([np.asarray(X[g].sum(axis=0)).ravel() for g in groups])
    tf = np.sqrt(counts)
    totals = counts.sum(axis=1, keepdims=True)
    avg = max(float(totals.mean()), 1.0)
    idf = np.log1p(avg / np.maximum(counts.sum(axis=0), 1.0))
    share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1.0)
    score = tf / np.maximum(totals, 1.0) ** 0.5 * idf * np.sqrt(share)
    out = []
    for row, c in zip(score, counts, strict=True):
        order = np.lexsort((vocab.astype(str), -row))  # ties broken alphabetically: deterministic
        out.append([str(vocab[j]) for j in order[:n] if c[j] > 0])
    return out


# ---------------------------------------------------------------------------------------------
# Graph clustering


def _knn_adjacency(knn: KnnGraph, n: int) -> sp.csr_matrix:
    """Symmetric weighted adjacency of the kNN graph: weight = cosine similarity, floored at 0.

    The union of both directions is kept (max weight), so hubs and outliers stay connected.
    """
    idx = np.asarray(knn.indices, dtype=np.int64)
    dist = np.asarray(knn.distances, dtype=np.float64)
    rows = np.repeat(np.arange(n), idx.shape[1])
    cols = idx.ravel()
    w = np.clip(1.0 - dist.ravel(), 0.0, None)
    ok = (cols >= 0) & (cols < n) & (cols != rows) & np.isfinite(w) & (w > 0)
    A = sp.csr_matrix((w[ok], (rows[ok], cols[ok])), shape=(n, n))
    return A.maximum(A.T).tocsr()


def _igraph(A: sp.csr_matrix):
    """``A`` (symmetric, weighted) as an undirected igraph graph with a ``weight`` per edge.

    Built once per tree: igraph copies edges in from Python one by one, which at 1M rows cost
    more than Louvain itself; each split then takes an induced subgraph, in C.
    """
    import igraph as ig

    coo = sp.triu(A, k=1).tocoo()
    graph = ig.Graph(n=A.shape[0], edges=np.column_stack([coo.row, coo.col]))
    graph.es["weight"] = coo.data
    return graph


def _louvain(graph, resolution: float, seed: int) -> np.ndarray:
    """Louvain community labels (0..c-1, largest community first) of a weighted igraph graph.

    igraph's C implementation (the whole AG News tree, 7,600 rows: 4.9 s against 28.7 s with
    networkx, same NMI). It draws from Python's ``random``, so seeding that makes it
    deterministic.
    """
    import random

    n = graph.vcount()
    state = random.getstate()
    random.seed(seed)
    try:
        parts = graph.community_multilevel(weights="weight", resolution=resolution)
    finally:
        random.setstate(state)
    membership = np.asarray(parts.membership, dtype=np.int64)
    # Renumber largest first (ties by first row), independent of igraph's numbering.
    sizes = np.bincount(membership)
    first = np.full(len(sizes), n)
    np.minimum.at(first, membership, np.arange(n))
    order = np.lexsort((first, -sizes))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[membership]


def _min_topic_size(n: int) -> int:
    """Smallest community kept as a topic when splitting ``n`` rows; smaller ones are noise.

    Grows like sqrt(n) so the number of topics per split stays bounded as corpora grow.
    """
    return max(3, int(round(math.sqrt(n) / 2)))


def _reassign_small(
    labels: np.ndarray, A: sp.csr_matrix, latent: np.ndarray, min_size: int
) -> np.ndarray:
    """Dissolve communities below ``min_size`` into kept ones (kNN vote, else nearest centroid).

    Returns labels renumbered 0..c-1 by decreasing size (ties: smallest first member).
    """
    labels = labels.copy()
    sizes = np.bincount(labels)
    keep = sizes >= min_size
    if not keep.any():  # nothing is big enough: keep the largest community alone
        keep[int(np.argmax(sizes))] = True
    labels[~keep[labels]] = -1
    # Weighted vote of already-assigned neighbours; repeat so assignments propagate inward.
    for _ in range(10):
        todo = np.flatnonzero(labels < 0)
        if todo.size == 0:
            break
        sub = A[todo].tocoo()
        nb = labels[sub.col]
        ok = nb >= 0
        if not ok.any():
            break
        votes = sp.csr_matrix(
            (sub.data[ok], (sub.row[ok], nb[ok])), shape=(todo.size, int(labels.max()) + 1)
        ).toarray()
        has = votes.max(axis=1) > 0
        labels[todo[has]] = votes[has].argmax(axis=1)
    todo = np.flatnonzero(labels < 0)
    if todo.size:  # isolated rows: nearest centroid in latent space
        ids = np.unique(labels[labels >= 0])
        cents = np.vstack([latent[labels == c].mean(axis=0) for c in ids])
        labels[todo] = ids[np.argmax(latent[todo] @ cents.T, axis=1)]
    return _renumber(labels)


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..c-1 by decreasing size, ties by first occurrence."""
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    remap = np.empty(int(ids.max()) + 1, np.int64)
    remap[ids[order]] = np.arange(len(ids))
    return remap[labels]


def _split(
    members: np.ndarray,
    A: sp.csr_matrix,
    graph,
    latent: np.ndarray,
    resolution: float,
    seed: int,
    min_size: int | None = None,
) -> np.ndarray | None:
    """Partition ``members`` (sorted row numbers) into communities, or ``None`` when there is no
    useful split. ``graph`` is ``A`` as built by ``_igraph``."""
    m = members.size
    min_size = _min_topic_size(m) if min_size is None else min_size
    if m < 2 * min_size:
        return None
    sub = A[members][:, members].tocsr()
    if sub.nnz == 0:
        return None
    # igraph numbers the subgraph's vertices in the order of the original ids: sorted members.
    whole = m == graph.vcount()
    labels = _louvain(graph if whole else graph.induced_subgraph(members), resolution, seed)
    labels = _reassign_small(labels, sub, latent[members], min_size)
    return labels if labels.max() >= 1 else None


# ---------------------------------------------------------------------------------------------
# The tree


def build_topic_tree(
    latent: np.ndarray,
    knn: KnnGraph,
    coords: np.ndarray,
    texts: Sequence[str],
    *,
    seed: int = 0,
    max_depth: int = 3,
    labeller: Labeller = keyword_labeller,
    resolutions: Sequence[float] = DEFAULT_RESOLUTIONS,
) -> TopicTree:
    """Build a ``max_depth``-level topic tree (2 or 3) over ``N`` rows.

    ``latent`` is ``(N, d)`` unit vectors, ``knn`` their kNN graph, ``coords`` the ``(N, 2)``
    map positions (only checked for shape: the map is built from the same kNN graph, so graph
    communities are already map regions) and ``texts`` each row's text, used for keywords and
    labels. ``resolutions[d - 1]`` is the Louvain resolution used to split at depth ``d``.
    Deterministic for a given ``seed``.
    """
    latent = np.asarray(latent, dtype=np.float32)
    n = latent.shape[0]
    if max_depth not in (2, 3):
        raise ValueError(f"max_depth must be 2 or 3, got {max_depth}")
    if knn.indices.shape[0] != n or len(texts) != n:
        raise ValueError("latent, knn and texts must have the same number of rows")
    coords = np.asarray(coords)
    if coords.shape != (n, 2):
        raise ValueError(f"coords must have shape ({n}, 2), got {coords.shape}")
    if len(resolutions) < max_depth:
        raise ValueError(f"need {max_depth} resolutions, got {len(resolutions)}")

    assignments = np.full((n, max_depth), -1, np.int64)
    if n == 0:
        return TopicTree(assignments, pd.DataFrame({c: [] for c in TOPIC_COLUMNS}))

    A = _knn_adjacency(knn, n)
    # Each node of the tree: (topic_id, depth, parent_id, member rows).
    nodes: list[tuple[int, int, int, np.ndarray]] = []
    # Depth 1 always exists: a single topic when the rows have no community structure.
    graph = _igraph(A)
    top = _split(np.arange(n), A, graph, latent, resolutions[0], seed)
    top = np.zeros(n, np.int64) if top is None else top
    frontier = [(-1, np.flatnonzero(top == c)) for c in range(int(top.max()) + 1)]
    for depth in range(1, max_depth + 1):
        # Ids are handed out level by level, so they are unique across depths.
        level = []
        for parent, rows in frontier:
            tid = len(nodes)
            nodes.append((tid, depth, parent, rows))
            assignments[rows, depth - 1] = tid
            level.append((tid, rows))
        if depth == max_depth:
            break
        frontier = []
        for tid, rows in level:
            sub = _split(rows, A, graph, latent, resolutions[depth], seed)
            if sub is not None:
                frontier.extend((tid, rows[sub == c]) for c in range(int(sub.max()) + 1))

    topics = _describe(nodes, latent, texts, labeller)
    return TopicTree(assignments=assignments, topics=topics)


def _describe(
    nodes: list[tuple[int, int, int, np.ndarray]],
    latent: np.ndarray,
    texts: Sequence[str],
    labeller: Labeller,
) -> pd.DataFrame:
    """Keywords (against siblings), labels and sizes for every node of the tree."""
    X, vocab = _doc_term(texts)
    keywords: dict[int, list[str]] = {}
    siblings: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for tid, depth, parent, rows in nodes:
        siblings.setdefault((depth, parent), []).append((tid, rows))
    for group in siblings.values():
        words = _ctfidf_keywords(X, vocab, [rows for _, rows in group])
        if len(group) == 1 and X.shape[1]:
            # A lone topic has nothing to contrast with: rank by plain frequency instead.
            words = [_frequent_words(X, vocab, group[0][1])]
        keywords.update({tid: w for (tid, _), w in zip(group, words, strict=True)})

    raw: list[str] = []
    for tid, _, _, rows in nodes:
        cent = latent[rows].mean(axis=0)
        central = rows[np.argsort(-(latent[rows] @ cent), kind="stable")[:N_CENTRAL]]
        label = str(labeller(keywords[tid], [str(texts[i]) for i in central])).strip()
        raw.append(label or f"Topic {tid}")
    by_depth: dict[int, list[int]] = {}
    for i, (_, depth, _, _) in enumerate(nodes):
        by_depth.setdefault(depth, []).append(i)
    final = list(raw)
    for idxs in by_depth.values():
        for i, label in zip(idxs, _unique_labels([raw[i] for i in idxs]), strict=True):
            final[i] = label

    return pd.DataFrame(
        {
            "topic_id": [t for t, _, _, _ in nodes],
            "depth": [d for _, d, _, _ in nodes],
            "parent_id": [p for _, _, p, _ in nodes],
            "label": final,
            "keywords": [keywords[t] for t, _, _, _ in nodes],
            "size": [int(r.size) for _, _, _, r in nodes],
        }
    ).astype({"topic_id": "int64", "depth": "int64", "parent_id": "int64", "size": "int64"})


def _frequent_words(X: sp.csr_matrix, vocab: np.ndarray, rows: np.ndarray) -> list[str]:
    """The most frequent non-stop words of ``rows`` (ties alphabetical)."""
    counts = np.asarray(X[rows].sum(axis=0)).ravel()
    order = np.lexsort((vocab.astype(str), -counts))
    return [str(vocab[j]) for j in order[:N_KEYWORDS] if counts[j] > 0]
