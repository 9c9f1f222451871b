"""Hierarchical topic model over the shared kNN graph: clusters, keywords and labels.

Pure computation (no Dagster, no file I/O). Two ways to find the clusters
(``cluster_method``, Nomic's own option):

* ``"fast"`` (the default) builds the tree top-down on the symmetrised kNN graph: depth 1 is a
  Leiden partition at a low resolution, so its communities are broad; each deeper level re-runs
  Leiden on the subgraph induced by one parent topic, so children nest inside their parent.
  Communities smaller than a size floor that grows with the rows being split are dissolved into
  the topic most of their kNN neighbours are in. Leiden (not Louvain) because it guarantees
  connected communities; ``benchmarks/topics.py`` compares the two.
* ``"hdbscan"`` does what BERTopic does: umap-learn reduces the latent vectors to 5 dimensions
  (over the map's own kNN graph), HDBSCAN clusters them, and the tree is read from HDBSCAN's
  condensed tree (coarser depths are earlier cuts of it). Points HDBSCAN calls noise are
  assigned to their nearest topic and counted (``TopicTree.noise``).

Either way every datum has a topic at every depth: a topic that does not split carries on as a
single child with its parent's label and keywords, as in Nomic's own ``topics.df``.

Keywords are class-based TF-IDF of each topic's texts against its siblings. Labels join a
topic's two best phrases of one to three words ("Star Formation & Galaxy"): candidates are
phrases whose words are neither stop words nor formula tokens (LaTeX is stripped), that are not
corpus-generic (in more than ``MAX_LABEL_DF`` of the texts), with plurals merged into their
singular, ranked by c-TF-IDF against the siblings and, when an ``encode`` function of the map's
own model is given, re-ranked by their similarity to the topic's centroid (KeyBERT's idea).
Labels are distinct within a depth, so siblings never share one.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlas_assets.lib.forked import forked_call, forked_map
from atlas_assets.lib.graph import KnnGraph
from atlas_assets.lib.refresh import CarryOver, describe_changes, match_topics

Labeller = Callable[[list[str], list[str]], str]
Encoder = Callable[[list[str]], np.ndarray]
ClusterMethod = Literal["fast", "hdbscan"]

TOPIC_COLUMNS = ["topic_id", "depth", "parent_id", "label", "keywords", "size"]
N_KEYWORDS = 10
N_CENTRAL = 5
# Resolution per depth for the "fast" route, chosen with benchmarks/topics.py. Below 1 favours
# fewer, larger communities: broad depth-1 topics (BBC: about 6 for its 5 sections), and 1.0 at
# depth 3 so the finest level actually refines.
DEFAULT_RESOLUTIONS = (0.5, 0.5, 1.0)
# A label candidate in more than this share of all texts is corpus-generic ("results",
# "model", "people"), whatever topic it is scored for.
MAX_LABEL_DF = 0.25
# Label candidates come from at most this many texts (a sample across the finest topics),
# so labelling costs the same at 10k rows and at 1M.
LABEL_SAMPLE = 20_000
N_CANDIDATES = 10
COVERAGE_WEIGHT = 0.5
# Labels pair two of a topic's best PAIRED phrases.
PAIRED = 6
# Leiden iterates until stable up to this many rows: on arXiv, 2 iterations (igraph's default)
# lose 0.005 to 0.015 NMI per depth. Beyond, 2 iterations: at 1M rows, iterating until stable
# took 2.5 times as long for a modularity higher by 0.00005 (see ``leiden_iterations``).
LEIDEN_CONVERGE_ROWS = 100_000
# From this many rows, the splits below depth 1 run in forked worker processes (Linux only).
PARALLEL_TOPICS_ROWS = 100_000
# A refresh keeps the previous topics of a split unless Leiden's partition has a modularity
# higher by at least this much (``_hysteresis``). Measured on AG News (6,800 rows + 10%): the
# gains of splits that kept their number of topics were 0.0005 to 0.005, up to 0.02 in small
# splits; a group of new rows that forms a topic of its own is kept without this margin.
KEEP_MARGIN = 0.01
# Edges formatted at a time for igraph's reader (_igraph): 72 MB of text.
EDGE_CHUNK = 1 << 22


@dataclass(frozen=True)
class TopicTree:
    """A topic hierarchy over ``N`` rows.

    ``assignments`` is ``(N, D)`` int64: column ``d - 1`` holds each row's topic id at depth
    ``d``, never ``-1`` (a topic that does not split continues as a single child). ``topics``
    has one row per topic with columns ``topic_id`` (unique across depths), ``depth`` (1..D),
    ``parent_id`` (``-1`` at depth 1), ``label`` (unique within a depth), ``keywords`` (list of
    up to 10 strings) and ``size``. ``noise`` counts the rows the clustering left without a
    cluster and that were assigned to their nearest topic (``"hdbscan"`` only). ``changes``
    (a refresh only) says per depth which topics were kept, split, merged, new and gone
    (:func:`atlas_assets.lib.refresh.describe_changes`).
    """

    assignments: np.ndarray
    topics: pd.DataFrame
    noise: int = 0
    changes: dict | None = None

    @property
    def depth(self) -> int:
        return int(self.assignments.shape[1])


@dataclass
class _Node:
    rows: np.ndarray
    children: list[_Node] = field(default_factory=list)
    carried: bool = False  # a copy of its parent, which did not split


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
    preferred (ties keep the c-TF-IDF order). The labeller before phrase labels; kept as the
    fallback of a topic without phrases and as a baseline in ``benchmarks/topics.py``.
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


# Words that say how a text is written, not what it is about: they made labels like
# "Paper, Group, Polynomial" (arXiv), "Labour, Election, Mr" (BBC) or "Theorem & Space".
GENERIC_WORDS = frozenset(
    (  # noqa: SIM905 (a word list reads best as words)
        "paper papers article study studies result results show shows shown present presented "
        "propose proposed using use used new mr mrs ms said says also let consider obtain "
        "obtained find found given told prove proves proved proof proofs theorem theorems lemma"
    ).split()
)
# Inline LaTeX ($...$) and commands (\frac, \alpha): formula tokens, never topic names.
_MATH = re.compile(r"\$[^$]*\$|\\[A-Za-z]+")
_WORD = re.compile(r"[^\W\d_][\w'-]*[^\W_]")
# Phrases never run across punctuation.
_BREAK = re.compile(r"[.,;:!?()\[\]{}\"<>|=+*/&^_~]|--|\s-\s|'s\b|\n")


def _strip_math(text: object) -> str:
    return _MATH.sub(" . ", text) if isinstance(text, str) else ""


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS | GENERIC_WORDS)


def _phrase_analyzer(stop: frozenset[str]) -> Callable[[str], list[str]]:
    """Each text's distinct 1-3 word phrases (lowercase), none containing a stop word."""

    def ok(token: str) -> bool:
        lower = token.lower()
        return lower not in stop and (len(token) >= 3 or token.isupper())

    def analyze(text: str) -> list[str]:
        """Phrases, and ``word>`` for each word followed by another in the text."""
        out = set()
        for chunk in _BREAK.split(text):
            run: list[str] = []
            for token in [*_WORD.findall(chunk), ""]:
                if token and ok(token):
                    run.append(token.lower())
                    continue
                for i in range(len(run)):
                    if i + 1 < len(run):
                        out.add(run[i] + ">")  # marks a word that modifies the next one
                    for n in (1, 2, 3):
                        gram = run[i : i + n]
                        if len(gram) == n and len(set(gram)) == n:  # not "tempo tempo"
                            out.add(" ".join(gram))
                run = []
        return list(out)

    return analyze


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is", "ics")):
        return word[:-1]
    return word


def _merge_plurals(X: sp.csr_matrix, vocab: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Fold each phrase into its singular form when that form is a phrase too."""
    index = {v: i for i, v in enumerate(vocab)}
    target = np.arange(len(vocab))
    for i, phrase in enumerate(vocab):
        *head, last = phrase.split(" ")
        singular = " ".join([*head, _singular(last)])
        if singular != phrase and singular in index:
            target[i] = index[singular]
    keep = np.unique(target)
    col = np.searchsorted(keep, target)
    M = sp.csr_matrix((np.ones(len(vocab)), (np.arange(len(vocab)), col)), (len(vocab), len(keep)))
    merged = (X @ M).tocsr()
    merged.data = np.minimum(merged.data, 1.0)  # still document counts
    return merged, vocab[keep]


@dataclass
class _Phrases:
    """Document-phrase incidence of the label sample: ``X[i, j]`` = 1 if sampled row
    ``rows[i]`` contains phrase ``vocab[j]``."""

    X: sp.csr_matrix
    vocab: np.ndarray
    rows: np.ndarray
    texts: list[str]

    @cached_property
    def kinds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(names, marker, multi, modifies)`` per phrase: its text as ``str``, whether it is
        a modifier marker (``"word>"``), whether it has several words, and the column of its
        marker (``-1``: none). Computed once: every sibling group reads them."""
        names = self.vocab.astype(str)
        index = {v: j for j, v in enumerate(names)}
        marker = np.char.endswith(names, ">")
        multi = np.char.find(names, " ") >= 0
        modifies = np.array(
            [-1 if marker[j] or multi[j] else index.get(v + ">", -1) for j, v in enumerate(names)],
            dtype=np.int64,
        )
        return names, marker, multi, modifies

    def local(self, rows: np.ndarray) -> np.ndarray:
        """Positions in the sample of those of ``rows`` that were sampled."""
        pos = np.searchsorted(self.rows, rows)
        pos = np.minimum(pos, len(self.rows) - 1)
        return pos[self.rows[pos] == rows] if len(self.rows) else pos[:0]


def _label_sample(leaves: list[np.ndarray], n: int, seed: int) -> np.ndarray:
    """Sorted rows whose texts give label candidates: all of them up to ``LABEL_SAMPLE``,
    else an equal share of each finest topic, so small topics keep texts."""
    if n <= LABEL_SAMPLE:
        return np.arange(n)
    quota = max(10, LABEL_SAMPLE // max(len(leaves), 1))
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(rows)[:quota] for rows in leaves]
    return np.sort(np.concatenate(picks))


def _phrases(texts: Sequence[str], rows: np.ndarray) -> _Phrases:
    from sklearn.feature_extraction.text import CountVectorizer

    sample = [texts[i] for i in rows]
    vec = CountVectorizer(
        analyzer=_phrase_analyzer(_stop_words()),
        min_df=2 if len(sample) >= 50 else 1,
        max_df=MAX_LABEL_DF if len(sample) >= 50 else 1.0,
        binary=True,
        dtype=np.float32,
    )
    try:
        X = vec.fit_transform(sample).tocsr()
    except ValueError:  # no phrase at all (or all pruned)
        return _Phrases(sp.csr_matrix((len(rows), 0), dtype=np.float32), np.array([]), rows, [])
    X, vocab = _merge_plurals(X, vec.get_feature_names_out())
    return _Phrases(X, vocab, rows, sample)


def _candidates(
    phrases: _Phrases, groups: list[np.ndarray], k: int = N_CANDIDATES
) -> list[list[tuple[str, float]]]:
    """Each group's best label phrases against the other groups: up to ``k`` single words and
    ``k`` longer phrases, best first, each with the share of the group's texts it is in.

    Scored by c-TF-IDF on document counts. A word that is mostly followed by another in the
    group's texts is a modifier ("stochastic", "quantum"), not a name, and is left out; a phrase
    gives way to a longer one that contains it and covers at least half as many of the group's
    texts ("hole" to "black hole").
    """
    local = [phrases.local(g) for g in groups]
    if phrases.X.shape[1] == 0:
        return [[] for _ in groups]
    counts = np.vstack([np.asarray(phrases.X[g].sum(axis=0)).ravel() for g in local])
    # A lone group has nothing to contrast with: coverage alone.
    score = counts.copy() if len(groups) == 1 else _ctfidf(counts)
    vocab, marker, multi, modifies = phrases.kinds
    out = []
    for row, c, g in zip(score, counts, local, strict=True):
        floor = max(2.0, 0.03 * len(g)) if len(g) >= 20 else 1.0
        ok = (c >= floor) & ~marker
        ok &= ~((modifies >= 0) & (c[np.maximum(modifies, 0)] >= 0.6 * c))
        order = np.flatnonzero(ok)  # sorted only where allowed: the vocabulary is long
        order = order[np.lexsort((vocab[order], -row[order]))]
        top = [*order[~multi[order]][: 2 * k], *order[multi[order]][: 2 * k]]
        best: dict[int, float] = {j: float(row[j]) for j in top}
        words = {j: phrases.vocab[j].split(" ") for j in top}
        for a in top:
            for b in top:
                if (
                    a != b
                    and a in best
                    and b in best
                    and len(words[b]) > len(words[a])
                    and _contains(words[b], words[a])
                    and c[b] >= 0.5 * c[a]
                ):
                    best[b] = max(best[b], best.pop(a))
        ranked = sorted(best, key=lambda j: (-best[j], vocab[j]))
        ranked = [j for j in ranked if not multi[j]][:k] + [j for j in ranked if multi[j]][:k]
        ranked.sort(key=lambda j: (-best[j], vocab[j]))
        out.append([(str(vocab[j]), float(c[j]) / max(len(g), 1)) for j in ranked])
    return out


def _contains(long: list[str], short: list[str]) -> bool:
    n = len(short)
    return any(long[i : i + n] == short for i in range(len(long) - n + 1))


def _display(phrase: str, texts: list[tuple[str, str]]) -> str:
    """``phrase`` as it is most often written in ``texts`` (each text with its ``casefold()``),
    title-cased when lowercase."""
    words = phrase.split(" ")
    # Only texts holding every word can match: compiling a pattern per phrase took 10 s of the
    # labels of 1M rows.
    folded = [w.casefold() for w in words]
    holding = [text for text, fold in texts if all(w in fold for w in folded)]
    found: dict[str, int] = {}
    if holding:
        pattern = re.compile(
            r"\b" + r"\s+".join(re.escape(w) + r"(?:s|es)?" for w in words) + r"\b",
            flags=re.IGNORECASE,
        )
        for text in holding:
            for m in pattern.finditer(text):
                found[m.group(0)] = found.get(m.group(0), 0) + 1
    if found:
        form = max(sorted(found), key=found.get)
        words = [
            w if w.lower().startswith(p) else p for w, p in zip(form.split(), words, strict=False)
        ]
    return " ".join(_title(w) for w in words)


# ---------------------------------------------------------------------------------------------
# Keywords (class-based TF-IDF)


def _doc_term(texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
    """Unigram counts without English stop words and generic words; empty vocabulary gives
    zero columns."""
    from sklearn.feature_extraction.text import CountVectorizer

    n = len(texts)
    # min_df=2 drops one-off tokens (typos, ids) once there are enough documents to afford it.
    vec = CountVectorizer(
        stop_words=sorted(_stop_words()),
        token_pattern=r"(?u)\b[^\W\d_][\w'-]*[^\W_]\b",
        min_df=2 if n >= 50 else 1,
        max_df=1.0,
        dtype=np.float32,
    )
    try:
        X = vec.fit_transform([_strip_math(t) for t in texts])
    except ValueError:  # only stop words or no tokens at all
        return sp.csr_matrix((n, 0), dtype=np.float32), np.array([], dtype=object)
    return X.tocsr(), vec.get_feature_names_out()


def _ctfidf(counts: np.ndarray) -> np.ndarray:
    """c-TF-IDF scores of ``(classes, terms)`` counts, each class against the others.

    BERTopic's formulation: ``tf(t, c) / |c| * log(1 + A / f(t))`` with ``A`` the mean word
    count per class and ``f(t)`` the term's frequency over all the given classes. Term
    frequency is square-rooted so a few very frequent words do not crowd out specific ones,
    and the score is weighted by the share of the term's occurrences that fall in the class, so
    words common to all siblings give way to the ones that set a class apart.
    """
    tf = np.sqrt(counts)
    totals = counts.sum(axis=1, keepdims=True)
    avg = max(float(totals.mean()), 1.0)
    idf = np.log1p(avg / np.maximum(counts.sum(axis=0), 1.0))
    share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1.0)
    return tf / np.maximum(totals, 1.0) ** 0.5 * idf * np.sqrt(share)


def _ctfidf_keywords(
    X: sp.csr_matrix, vocab: np.ndarray, groups: list[np.ndarray], n: int = N_KEYWORDS
) -> list[list[str]]:
    """Top ``n`` c-TF-IDF words of each group of rows, contrasted with the other groups."""
    if X.shape[1] == 0 or not groups:
        return [[] for _ in groups]
    counts = np.vstack([np.asarray(X[g].sum(axis=0)).ravel() for g in groups])
    out = []
    for row, c in zip(_ctfidf(counts), counts, strict=True):
        order = np.lexsort((vocab.astype(str), -row))  # ties broken alphabetically: deterministic
        out.append([str(vocab[j]) for j in order[:n] if c[j] > 0])
    return out


def _frequent_words(X: sp.csr_matrix, vocab: np.ndarray, rows: np.ndarray) -> list[str]:
    """The most frequent non-stop words of ``rows`` (ties alphabetical)."""
    counts = np.asarray(X[rows].sum(axis=0)).ravel()
    order = np.lexsort((vocab.astype(str), -counts))
    return [str(vocab[j]) for j in order[:N_KEYWORDS] if counts[j] > 0]


# ---------------------------------------------------------------------------------------------
# Graph clustering ("fast")


def _knn_adjacency(knn: KnnGraph, n: int) -> sp.csr_matrix:
    """Symmetric weighted adjacency of the kNN graph: weight = cosine similarity, floored at 0.

    The union of both directions is kept (max weight), so hubs and outliers stay connected.
    Indices in int32 (int64 row and column arrays held 0.5 GB at 1M rows and k = 30); weights
    in float64 as before, so the partitions stay exactly those of earlier builds.
    """
    k = knn.indices.shape[1]
    cols = np.asarray(knn.indices).reshape(-1)
    w = np.clip(1.0 - np.asarray(knn.distances, dtype=np.float64).reshape(-1), 0.0, None)
    rows = np.repeat(np.arange(n, dtype=np.int32), k)
    ok = (cols >= 0) & (cols < n) & (cols != rows) & np.isfinite(w) & (w > 0)
    A = sp.csr_matrix((w[ok], (rows[ok], cols[ok].astype(np.int32))), shape=(n, n))
    del rows, cols, w, ok
    return A.maximum(A.T).tocsr()


@dataclass
class _Graph:
    """An undirected igraph graph ``g`` and its edge weights, in ``g``'s edge order.

    The weights stay in numpy: as an igraph attribute they are a Python float per edge (0.9 GB
    at 1M rows), whose reference counts forked workers would write to, copying every page.
    """

    g: Any
    weights: np.ndarray


def _igraph(A: sp.csr_matrix) -> _Graph:
    """``A`` (symmetric, weighted) as an undirected igraph graph and its edge weights.

    Built once per tree, each edge once (upper triangle, read straight off the CSR arrays), and
    through igraph's edge-list reader: handed a Python sequence or an array, igraph converts
    every edge to Python objects first, which at 1M rows (30M edges) took 5.6 GB on top of the
    graph and most of a minute; the text takes 18 bytes an edge, in a temporary file. Each
    split then takes an induced subgraph, in C.
    """
    import tempfile

    import igraph as ig

    n = A.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(A.indptr))
    upper = A.indices > rows
    heads, tails = rows[upper], A.indices[upper]
    del rows
    with tempfile.TemporaryFile() as f:
        for start in range(0, heads.size, EDGE_CHUNK):
            stop = start + EDGE_CHUNK
            f.write(_edge_lines(heads[start:stop], tails[start:stop], n))
        f.seek(0)
        graph = ig.Graph.Read_Edgelist(f, directed=False)
    graph.add_vertices(n - graph.vcount())  # trailing rows without edges
    return _Graph(graph, A.data[upper])


def _induced(graph: _Graph, members: np.ndarray, sub: sp.csr_matrix) -> _Graph:
    """The subgraph of ``graph`` on ``members`` (sorted), whose adjacency is ``sub``.

    igraph numbers its vertices in the order of ``members`` and, building it afresh, lists each
    edge under its higher end: the lower triangle of ``sub`` in CSR order. That order is igraph's
    choice, so a few edges are checked, and all are looked up if it ever differs.
    """
    g = graph.g.induced_subgraph(members, implementation="create_from_scratch")
    sub.sort_indices()
    rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    lower = sub.indices < rows
    tails, heads, weights = sub.indices[lower], rows[lower], sub.data[lower]
    if weights.size != g.ecount():
        raise RuntimeError(f"induced subgraph has {g.ecount()} edges, expected {weights.size}")
    probe = np.unique(np.linspace(0, weights.size - 1, min(weights.size, 16)).astype(np.int64))
    if [g.es[int(i)].tuple for i in probe] != list(zip(tails[probe], heads[probe], strict=True)):
        ends = np.array(g.get_edgelist(), dtype=np.int64).reshape(-1, 2)
        weights = np.asarray(sub[ends[:, 0], ends[:, 1]]).ravel()
    return _Graph(g, weights)


def _edge_lines(heads: np.ndarray, tails: np.ndarray, n: int) -> bytes:
    """``"head tail\\n"`` lines, ids zero-padded to the width of ``n - 1``."""
    width = len(str(max(n - 1, 1)))
    out = np.empty((heads.size, 2, width + 1), np.uint8)
    for j, ids in enumerate((heads, tails)):
        x = ids.astype(np.int64)
        for p in range(width - 1, -1, -1):
            x, digit = np.divmod(x, 10)
            out[:, j, p] = 48 + digit  # ASCII "0" + digit
    out[:, 0, width] = ord(" ")
    out[:, 1, width] = ord("\n")
    return out.tobytes()


def leiden_iterations(n_rows: int) -> int:
    """Leiden iterations per split of a corpus of ``n_rows``: until stable (``-1``) up to
    ``LEIDEN_CONVERGE_ROWS``, else 2 (igraph's default), as umap-learn runs fewer epochs on
    larger graphs."""
    return -1 if n_rows <= LEIDEN_CONVERGE_ROWS else 2


def _communities(
    graph: _Graph,
    resolution: float,
    seed: int,
    method: str = "leiden",
    initial: np.ndarray | None = None,
    iterations: int = -1,
) -> np.ndarray:
    """Community labels (0..c-1, largest first) of a weighted graph by modularity.

    ``method`` is ``"leiden"`` (connected communities guaranteed; ``iterations`` of it, ``-1``
    until stable) or ``"louvain"`` (kept for the comparison in ``benchmarks/topics.py``). igraph
    draws from Python's ``random``, so seeding that makes both deterministic. ``initial`` (Leiden
    only) is a membership to start from, ``-1`` for vertices that start alone: a refresh starts
    from the previous topics.
    """
    start = None
    if initial is not None:
        start = initial.copy()
        alone = start < 0
        start[~alone] = np.unique(start[~alone], return_inverse=True)[1]
        start[alone] = int(start[~alone].max(initial=-1)) + 1 + np.arange(int(alone.sum()))
        start = start.tolist()
    state = random.getstate()
    random.seed(seed)
    try:
        if method == "leiden":
            parts = graph.g.community_leiden(
                objective_function="modularity",
                weights=graph.weights,
                resolution=resolution,
                n_iterations=iterations,
                initial_membership=start,
            )
        elif method == "louvain":
            parts = graph.g.community_multilevel(weights=graph.weights, resolution=resolution)
        else:
            raise ValueError(f"community method must be 'leiden' or 'louvain', got {method!r}")
    finally:
        random.setstate(state)
    return _renumber(np.asarray(parts.membership, dtype=np.int64))


def _min_topic_size(n: int) -> int:
    """Smallest community kept as a topic when splitting ``n`` rows; smaller ones are noise.

    Grows like sqrt(n) so the number of topics per split stays bounded as corpora grow.
    """
    return max(3, int(round(math.sqrt(n) / 2)))


def _assign_noise(
    labels: np.ndarray, A: sp.csr_matrix, latent: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """Give every ``-1`` row the topic most of its kNN neighbours are in (weighted vote,
    repeated so assignments propagate inward), else the nearest centroid in latent space.

    ``rows`` are the latent rows of ``A``'s vertices (``None``: all of them, in order), read
    only for isolated rows: a copy of the latent would take 1.5 GB at 1M rows."""
    labels = labels.copy()
    n_topics = int(labels.max()) + 1
    for _ in range(10):
        todo = np.flatnonzero(labels < 0)
        if todo.size == 0:
            return labels
        sub = A[todo].tocoo()
        nb = labels[sub.col]
        ok = nb >= 0
        if not ok.any():
            break
        votes = sp.csr_matrix(
            (sub.data[ok], (sub.row[ok], nb[ok])), shape=(todo.size, n_topics)
        ).toarray()
        has = votes.max(axis=1) > 0
        labels[todo[has]] = votes[has].argmax(axis=1)
    todo = np.flatnonzero(labels < 0)
    if todo.size:  # isolated rows
        rows = np.arange(labels.size) if rows is None else rows
        ids = np.unique(labels[labels >= 0])
        cents = np.vstack([latent[rows[labels == c]].mean(axis=0) for c in ids])
        labels[todo] = ids[np.argmax(latent[rows[todo]] @ cents.T, axis=1)]
    return labels


def _reassign_small(
    labels: np.ndarray,
    A: sp.csr_matrix,
    latent: np.ndarray,
    min_size: int,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Dissolve communities below ``min_size`` into kept ones; labels renumbered by size.
    ``rows`` as for :func:`_assign_noise`."""
    labels = labels.copy()
    sizes = np.bincount(labels)
    keep = sizes >= min_size
    if not keep.any():  # nothing is big enough: keep the largest community alone
        keep[int(np.argmax(sizes))] = True
    labels[~keep[labels]] = -1
    return _renumber(_assign_noise(labels, A, latent, rows))


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..c-1 by decreasing size, ties by first occurrence."""
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    remap = np.empty(int(ids.max()) + 1, np.int64)
    remap[ids[order]] = np.arange(len(ids))
    return remap[labels]


@dataclass
class _Splitter:
    """What every split of one tree reads: the adjacency ``A``, the same as an igraph graph
    (``_igraph``), the latent rows, and the clustering settings. ``previous`` (``(N, D_old)``
    old topic ids, ``-1`` on new rows) gives each split's starting partition at its depth."""

    A: sp.csr_matrix
    graph: _Graph
    latent: np.ndarray
    max_depth: int
    resolutions: Sequence[float]
    seed: int
    method: str
    iterations: int
    previous: np.ndarray | None = None

    def grow(self, node: _Node, depth: int, last: int | None = None) -> _Node:
        """Split ``node`` (at ``depth``, 0 for the root) and its children, down to depth
        ``last`` (default ``max_depth``); returns ``node``."""
        frontier = [node]
        for d in range(depth, self.max_depth if last is None else last):
            nxt = []
            for parent in frontier:
                labels = self.split(parent.rows, d)
                if labels is None and d == 0:  # depth 1 always exists
                    labels = np.zeros(parent.rows.size, np.int64)
                if labels is not None:
                    parent.children = [_Node(g) for g in _groups(parent.rows, labels)]
                    nxt.extend(parent.children)
            frontier = nxt
        return node

    def grow_subtree(self, node: _Node) -> _Node:
        """``grow(node, 1)``: a depth-1 topic's subtree."""
        return self.grow(node, 1)

    def split(self, members: np.ndarray, depth: int) -> np.ndarray | None:
        """Partition ``members`` (sorted row numbers) into the communities of depth
        ``depth + 1``, or ``None`` when there is no useful split."""
        m = members.size
        min_size = _min_topic_size(m)
        if m < 2 * min_size:
            return None
        # The whole graph (depth 1) as it is: a copy of it would hold another 0.5 GB at 1M rows.
        whole = m == self.graph.g.vcount()
        sub = self.A if whole else self.A[members][:, members].tocsr()
        if sub.nnz == 0:
            return None
        g = self.graph if whole else _induced(self.graph, members, sub)
        start = None
        old = self.previous
        if old is not None and self.method == "leiden" and depth < old.shape[1]:
            start = old[members, depth]
        resolution = self.resolutions[depth]
        if start is not None and (start < 0).any() and (start >= 0).any():
            # Modularity weighs a merge against the graph's total weight, so a group of new
            # rows apart from the rest would merge old topics it never touched (the resolution
            # limit). Scaling the resolution by the weight the new rows hold among themselves
            # keeps the old topics' balance: by 1 when new rows mingle with old ones, by the
            # growth of the total when they only link to each other.
            new = start < 0
            total = float(sub.sum(dtype=np.float64))
            inside = float(sub[new][:, new].sum(dtype=np.float64))
            resolution *= total / max(total - inside, 1e-12)
        labels = _communities(g, resolution, self.seed, self.method, start, self.iterations)
        labels = _reassign_small(labels, sub, self.latent, min_size, members)
        if start is not None and (start >= 0).any():
            labels = _hysteresis(labels, start, g, sub, self.latent, members, resolution, min_size)
        return labels if labels.max() >= 1 else None


def _hysteresis(
    labels: np.ndarray,
    start: np.ndarray,
    graph: _Graph,
    A: sp.csr_matrix,
    latent: np.ndarray,
    rows: np.ndarray,
    resolution: float,
    min_size: int,
) -> np.ndarray:
    """A refresh's partition: Leiden's ``labels`` only if their modularity beats the previous
    topics' by ``KEEP_MARGIN``, else the previous topics (``start``, ``-1`` on new rows).

    In the previous topics, new rows that Leiden grouped mostly among themselves keep those
    groups (new topics), and the other new rows join the topic of their neighbours. Leiden, even
    started from the previous topics, moves rows along every border for small gains in
    modularity; those are not worth renaming topics of a map its users learnt.
    """
    old = start.copy()
    fresh = start < 0
    old[~fresh] = np.unique(start[~fresh], return_inverse=True)[1]
    share_new = np.bincount(labels, weights=fresh.astype(float)) / np.bincount(labels)
    for c in np.flatnonzero(share_new > 0.5):
        old[fresh & (labels == c)] = int(old.max()) + 1
    old = _reassign_small(_assign_noise(old, A, latent, rows), A, latent, min_size, rows)
    gain = _modularity(graph, labels, resolution) - _modularity(graph, old, resolution)
    return labels if gain >= KEEP_MARGIN else old


def _modularity(graph: _Graph, labels: np.ndarray, resolution: float) -> float:
    return float(graph.g.modularity(labels.tolist(), weights=graph.weights, resolution=resolution))


def _graph_tree(
    A: sp.csr_matrix,
    latent: np.ndarray,
    max_depth: int,
    resolutions: Sequence[float],
    seed: int,
    method: str,
    previous: np.ndarray | None = None,
) -> _Node:
    """The top-down Leiden tree; with ``previous`` (``(N, D_old)`` old topic ids, ``-1`` on
    new rows) each split starts from the old topics of its depth, new rows on their own.

    Depth 1 splits the whole graph; each depth-1 topic's subtree is then grown on its own, in
    forked workers from ``PARALLEL_TOPICS_ROWS`` rows (``lib.forked``). Every split is seeded
    alone, so the tree is the same either way.
    """
    n = latent.shape[0]
    if previous is not None and method == "leiden" and (previous[:, 0] >= 0).all():
        return _tree_of(previous[:, :max_depth])  # no new row: nothing to re-cluster
    splitter = _Splitter(
        A, _igraph(A), latent, max_depth, resolutions, seed, method, leiden_iterations(n), previous
    )
    root = splitter.grow(_Node(np.arange(n)), 0, last=1)
    nodes = root.children
    if n >= PARALLEL_TOPICS_ROWS:
        largest_first = sorted(range(len(nodes)), key=lambda i: -nodes[i].rows.size)
        root.children = forked_map(splitter.grow_subtree, nodes, largest_first)
    else:
        root.children = [splitter.grow_subtree(node) for node in nodes]
    return root


def _groups(rows: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """``rows[labels == c]`` for each ``c`` in ``0..labels.max()``, in one sort (a mask per
    community costs rows x communities: 200 million comparisons at depth 1 of 1M rows)."""
    order = np.argsort(labels, kind="stable")
    return np.split(rows[order], np.cumsum(np.bincount(labels))[:-1])


def _tree_of(assignments: np.ndarray) -> _Node:
    """The tree whose depth ``d`` topics are the groups of column ``d - 1`` (nested); a topic
    whose rows all fall in one topic of the next depth carries on unsplit."""
    root = _Node(np.arange(assignments.shape[0]))
    frontier = [root]
    for depth in range(assignments.shape[1]):
        nxt = []
        for node in frontier:
            column = assignments[node.rows, depth]
            groups = [node.rows[column == c] for c in np.unique(column)]
            groups.sort(key=lambda g: (-g.size, g[0]))
            if len(groups) == 1 and depth > 0:
                node.children = [_Node(node.rows, carried=True)]
            else:
                node.children = [_Node(g) for g in groups]
            nxt.extend(node.children)
        frontier = nxt
    return root


# ---------------------------------------------------------------------------------------------
# HDBSCAN over a UMAP of the latent ("hdbscan")


def _hdbscan_min_cluster_size(n: int) -> int:
    """BERTopic's default of 10 rows, growing like sqrt(n) on large corpora."""
    return max(10, int(round(math.sqrt(n) / 4)))


def _reduce(latent: np.ndarray, knn: KnnGraph, seed: int) -> np.ndarray:
    """5-d UMAP of the latent as BERTopic configures it, over the map's own kNN graph.

    umap-learn compiles its numba functions afresh in each process (tens of seconds cold),
    hence the import here.
    """
    import warnings

    import umap

    n = latent.shape[0]
    k = int(min(15, knn.indices.shape[1] + 1, n - 1))
    idx = np.concatenate([np.arange(n)[:, None], knn.indices[:, : k - 1]], axis=1)
    dist = np.concatenate([np.zeros((n, 1), np.float32), knn.distances[:, : k - 1]], axis=1)
    precomputed = (idx, dist.astype(np.float32), None) if (idx >= 0).all() else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state; knn search notes
        reducer = umap.UMAP(
            n_neighbors=k,
            n_components=5,
            min_dist=0.0,
            metric="cosine",
            random_state=seed,
            precomputed_knn=precomputed or (None, None, None),
            init="spectral" if n > 20 else "random",
        )
        return reducer.fit_transform(latent).astype(np.float64)


def _hdbscan_tree(
    A: sp.csr_matrix, latent: np.ndarray, knn: KnnGraph, max_depth: int, seed: int
) -> tuple[_Node, int]:
    """The tree read from HDBSCAN's condensed tree, and how many noise rows were assigned.

    The finest depth is HDBSCAN's own selection (excess of mass). Coarser depths are cuts of
    the condensed tree, made by undoing its splits from the least dense up, so every depth
    nests in the one above: depth 1 is the cut that lasts longest.
    """
    import hdbscan

    n = latent.shape[0]
    root = _Node(np.arange(n))
    min_size = _hdbscan_min_cluster_size(n)
    if n < 2 * min_size:
        root.children = [_Node(np.arange(n))]
        return root, 0
    low = _reduce(latent, knn, seed)
    clusterer = hdbscan.HDBSCAN(
        min_cluster_size=min_size, metric="euclidean", cluster_selection_method="eom"
    ).fit(low)
    tree = clusterer.condensed_tree_
    raw = tree.to_numpy()
    selected = sorted(int(c) for c in tree._select_clusters())
    if len(selected) < 2:
        root.children = [_Node(np.arange(n))]
        return root, int((clusterer.labels_ < 0).sum())

    is_cluster = raw["child"] >= n
    clusters = raw["child"][is_cluster].tolist()
    parent_of = dict(zip(clusters, raw["parent"][is_cluster].tolist(), strict=True))
    birth = dict(zip(clusters, raw["lambda_val"][is_cluster].tolist(), strict=True))
    children: dict[int, list[int]] = {}
    for c in sorted(parent_of):
        children.setdefault(parent_of[c], []).append(c)
    chosen = set(selected)
    # The selected cluster each cluster lies in (clusters are numbered top-down), or -1.
    leaf_of: dict[int, int] = {n: -1}
    for c in sorted(parent_of):
        leaf_of[c] = c if c in chosen else leaf_of[parent_of[c]]
    points = ~is_cluster
    leaf = np.full(n, -1, np.int64)
    leaf[raw["child"][points]] = [leaf_of[int(p)] for p in raw["parent"][points]]
    noise = int((leaf < 0).sum())
    # Finest topics by position in `selected`; noise goes to its nearest topic.
    code = dict(zip(selected, range(len(selected)), strict=True))
    labels = _assign_noise(np.array([code.get(c, -1) for c in leaf.tolist()]), A, latent)

    def ancestors_in(cut: set[int]) -> np.ndarray:
        """Per finest topic, the cluster of ``cut`` that contains it."""
        out = np.empty(len(selected), np.int64)
        for i, c in enumerate(selected):
            while c not in cut:
                c = parent_of[c]
            out[i] = c
        return out

    # Undo the splits in order of density (the lambda at which the children are born): the
    # k-th cut holds k + 1 clusters and lasts from its split's lambda to the next one's.
    cuts, lambdas, cut = [{n}], [], {n}
    while splittable := [c for c in cut if c not in chosen and c in children]:
        c = min(splittable, key=lambda c: (min(birth[k] for k in children[c]), c))
        lambdas.append(min(birth[k] for k in children[c]))
        cut = (cut - {c}) | set(children[c])
        cuts.append(cut)
    finite = raw["lambda_val"][np.isfinite(raw["lambda_val"])]
    lambdas.append(max(float(finite.max()), lambdas[-1]) * 2)  # the densest point, and beyond
    m = len(selected)
    # Depth 1: the most persistent cut (longest in log lambda) of 2 to about 2 sqrt(m) clusters;
    # the finest depth: HDBSCAN's own selection; between: the geometric mean of their sizes.
    cap = max(2, round(2 * math.sqrt(m)))
    life = np.diff(np.log(np.maximum(lambdas, 1e-12)))
    first = 1 + int(np.argmax(life[: cap - 1])) if m > 2 else len(cuts) - 1
    middle = [max(first, round(math.sqrt((first + 1) * m)) - 1)] if max_depth == 3 else []
    levels = [ancestors_in(cuts[k])[labels] for k in (first, *middle, len(cuts) - 1)]
    # Build nodes level by level. A cluster that stays whole across a cut carries on as itself,
    # and may still split at a later cut.
    frontier = [root]
    for depth, level in enumerate(levels):
        nxt = []
        for node in frontier:
            rows = node.rows
            groups = [rows[level[rows] == c] for c in np.unique(level[rows])]
            groups.sort(key=lambda g: (-g.size, g[0]))
            if len(groups) > 1 or depth == 0:
                node.children = [_Node(g) for g in groups]
            else:
                node.children = [_Node(rows, carried=True)]
            nxt.extend(node.children)
        frontier = nxt
    return root, noise


# ---------------------------------------------------------------------------------------------
# The tree


def _flatten(root: _Node, max_depth: int) -> list[tuple[int, int, int, _Node]]:
    """``(topic_id, depth, parent_id, node)`` level by level, after trimming the deepest levels
    nothing split into (depth stays at least 2) and carrying unsplit topics down."""
    height, level = 0, [root]
    for depth in range(1, max_depth + 1):
        level = [c for node in level for c in node.children]
        if any(not node.carried for node in level):
            height = depth
    depth_count = max(2, height)
    out: list[tuple[int, int, int, _Node]] = []
    frontier = [(-1, child) for child in root.children]
    for depth in range(1, depth_count + 1):
        level = []
        for parent, node in frontier:
            tid = len(out)  # ids handed out level by level: unique across depths
            out.append((tid, depth, parent, node))
            level.append((tid, node))
        frontier = []
        for tid, node in level:
            if depth < depth_count and not node.children:
                node.children = [_Node(node.rows, carried=True)]
            if depth < depth_count:
                frontier.extend((tid, c) for c in node.children)
    return out


def build_topic_tree(
    latent: np.ndarray,
    knn: KnnGraph,
    coords: np.ndarray,
    texts: Sequence[str],
    *,
    seed: int = 0,
    max_depth: int = 3,
    labeller: Labeller | None = None,
    resolutions: Sequence[float] = DEFAULT_RESOLUTIONS,
    cluster_method: ClusterMethod = "fast",
    community: Literal["leiden", "louvain"] = "leiden",
    encode: Encoder | None = None,
    previous: CarryOver | None = None,
) -> TopicTree:
    """Build a topic tree of 2 or 3 depths (``max_depth`` at most) over ``N`` rows.

    ``latent`` is ``(N, d)`` unit vectors, ``knn`` their kNN graph, ``coords`` the ``(N, 2)``
    map positions (only checked for shape: the map is built from the same kNN graph, so graph
    communities are already map regions) and ``texts`` each row's text, used for keywords and
    labels. ``cluster_method`` is ``"fast"`` (Leiden on the kNN graph; ``resolutions[d - 1]``
    splits at depth ``d``; ``community="louvain"`` only for comparison) or ``"hdbscan"`` (umap-
    learn then HDBSCAN, as BERTopic). ``encode`` embeds phrases with the map's model, to re-rank
    label candidates by similarity to the topic's centroid; ``labeller(keywords,
    central_texts)`` replaces the phrase labels altogether. Deterministic for a given ``seed``.

    ``previous`` (a refresh: the previous build's topics aligned to these rows, see
    :mod:`atlas_assets.lib.refresh`) keeps the map its users learnt. With ``"fast"``, each
    Leiden split starts from the old topics (new rows on their own), and when no row is new the
    old topics are kept as they are. Whatever the method, new topics are then matched to the
    old ones at every depth: a matched topic keeps its ``topic_id`` and label, others get ids
    above the old ones, and ``TopicTree.changes`` says what was kept, split, merged, new and
    gone. ``"hdbscan"`` clusters afresh (it has no starting partition) and only matches.
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
    if cluster_method not in ("fast", "hdbscan"):
        raise ValueError(f"cluster_method must be 'fast' or 'hdbscan', got {cluster_method!r}")
    if previous is not None and previous.assignments.shape[0] != n:
        raise ValueError("previous must be aligned to the rows (PriorTopics.aligned)")
    if n == 0:
        empty = pd.DataFrame({c: [] for c in TOPIC_COLUMNS})
        return TopicTree(np.full((0, 2), -1, np.int64), empty)

    A = _knn_adjacency(knn, n)
    noise = 0
    # The keywords' document-term matrix does not depend on the tree: a forked worker counts it
    # while the graph is clustered.
    with forked_call(_doc_term, texts, enabled=n >= PARALLEL_TOPICS_ROWS) as counted:
        if cluster_method == "hdbscan":
            root, noise = _hdbscan_tree(A, latent, knn, max_depth, seed)
        else:
            old = None if previous is None else previous.assignments
            root = _graph_tree(A, latent, max_depth, resolutions, seed, community, old)
        del A  # the labels do not need the graph: at 1M rows it is 0.5 GB
        doc_term = counted.result()
    nodes = _flatten(root, max_depth)
    depth_count = max(d for _, d, _, _ in nodes)
    assignments = np.full((n, depth_count), -1, np.int64)
    for tid, depth, _, node in nodes:
        assignments[node.rows, depth - 1] = tid
    if previous is None:
        topics = _describe(nodes, doc_term, latent, texts, labeller, encode, seed)
        return TopicTree(assignments=assignments, topics=topics, noise=noise)
    nodes, assignments, fixed, matches = _carry_ids(nodes, assignments, previous)
    topics = _describe(nodes, doc_term, latent, texts, labeller, encode, seed, fixed)
    new_labels = dict(zip(topics["topic_id"].tolist(), topics["label"].tolist(), strict=True))
    changes = describe_changes(matches, new_labels, previous.labels)
    return TopicTree(assignments=assignments, topics=topics, noise=noise, changes=changes)


def _carry_ids(
    nodes: list[tuple[int, int, int, _Node]], assignments: np.ndarray, previous: CarryOver
) -> tuple[list[tuple[int, int, int, _Node]], np.ndarray, dict[int, str], list]:
    """Renumber the tree's topics: a topic matched to an old one takes its id (and its label,
    returned as ``fixed``); the others take ids from ``previous.next_id`` on, in level order."""
    from atlas_assets.lib.refresh import Match

    raw = []
    remap: dict[int, int] = {}
    for d in range(1, min(assignments.shape[1], previous.assignments.shape[1]) + 1):
        old = previous.assignments[:, d - 1]
        m = match_topics(assignments[:, d - 1], old, previous.sizes_at(d))
        raw.append(m)
        remap.update(m.kept)
    fixed = {remap[a]: previous.labels[b] for m in raw for a, b in m.kept.items()}
    next_id = previous.next_id
    for tid, _, _, _ in nodes:  # level order, as the ids of a first build
        if tid not in remap:
            remap[tid] = next_id
            next_id += 1
    lookup = np.array([remap[t] for t in range(len(nodes))], np.int64)
    nodes = [(remap[t], d, remap.get(p, -1), node) for t, d, p, node in nodes]
    matches = [
        Match(
            kept={int(lookup[a]): b for a, b in m.kept.items()},
            sources={int(lookup[a]): s for a, s in m.sources.items()},
            parts={b: [int(lookup[a]) for a in ps] for b, ps in m.parts.items()},
        )
        for m in raw
    ]
    return nodes, lookup[assignments], fixed, matches


def _describe(
    nodes: list[tuple[int, int, int, _Node]],
    doc_term: tuple[sp.csr_matrix, np.ndarray],
    latent: np.ndarray,
    texts: Sequence[str],
    labeller: Labeller | None,
    encode: Encoder | None,
    seed: int,
    fixed: dict[int, str] | None = None,
) -> pd.DataFrame:
    """Keywords (against siblings; ``doc_term`` is ``_doc_term(texts)``), labels and sizes for
    every node of the tree; ``fixed`` labels (topics a refresh kept) stay as they are."""
    X, vocab = doc_term
    keywords: dict[int, list[str]] = {}
    siblings: dict[int, list[tuple[int, _Node]]] = {}
    for tid, _, parent, node in nodes:
        siblings.setdefault(parent, []).append((tid, node))
    for group in siblings.values():
        if group[0][1].carried:  # the same topic as its parent, one depth down
            continue
        rows = [node.rows for _, node in group]
        words = _ctfidf_keywords(X, vocab, rows)
        if len(group) == 1 and X.shape[1]:
            # A lone topic has nothing to contrast with: rank by plain frequency instead.
            words = [_frequent_words(X, vocab, rows[0])]
        keywords.update({tid: w for (tid, _), w in zip(group, words, strict=True)})
    for tid, _, parent, node in nodes:  # level order: parents first
        if node.carried:
            keywords[tid] = keywords[parent]

    labels = _labels(nodes, siblings, keywords, latent, texts, labeller, encode, seed, fixed or {})
    return pd.DataFrame(
        {
            "topic_id": [t for t, _, _, _ in nodes],
            "depth": [d for _, d, _, _ in nodes],
            "parent_id": [p for _, _, p, _ in nodes],
            "label": [labels[t] for t, _, _, _ in nodes],
            "keywords": [keywords[t] for t, _, _, _ in nodes],
            "size": [int(node.rows.size) for _, _, _, node in nodes],
        }
    ).astype({"topic_id": "int64", "depth": "int64", "parent_id": "int64", "size": "int64"})


def _labels(
    nodes: list[tuple[int, int, int, _Node]],
    siblings: dict[int, list[tuple[int, _Node]]],
    keywords: dict[int, list[str]],
    latent: np.ndarray,
    texts: Sequence[str],
    labeller: Labeller | None,
    encode: Encoder | None,
    seed: int,
    fixed: dict[int, str],
) -> dict[int, str]:
    """A label per topic, unique within its depth; a carried topic keeps its parent's, a
    ``fixed`` one its own (unless it now has siblings and its old label is its parent's)."""

    def central(rows: np.ndarray, count: int = N_CENTRAL) -> np.ndarray:
        cent = latent[rows].mean(axis=0)
        return rows[np.argsort(-(latent[rows] @ cent), kind="stable")[:count]]

    # Ranked candidates per topic (a custom labeller gives exactly one).
    ranked: dict[int, list[str]] = {}
    cover: dict[int, dict[str, float]] = {}
    real = [(tid, node) for tid, _, _, node in nodes if not node.carried]
    if labeller is not None:
        for tid, node in real:
            label = str(labeller(keywords[tid], [str(texts[i]) for i in central(node.rows)]))
            ranked[tid] = [label.strip() or f"Topic {tid}"]
    else:
        has_children = {p for _, _, p, _ in nodes}
        leaves = [node.rows for tid, _, _, node in nodes if tid not in has_children]
        sample = _label_sample(leaves, latent.shape[0], seed)
        phrases = _phrases([_strip_math(t) for t in texts], sample)
        for group in siblings.values():
            if group[0][1].carried:
                continue
            cands = _candidates(phrases, [node.rows for _, node in group])
            for (tid, _), c in zip(group, cands, strict=True):
                ranked[tid] = [p for p, _ in c]
                cover[tid] = dict(c)
        if encode is not None:
            _rerank(ranked, cover, dict(real), latent, encode)
        for tid, node in real:
            best = ranked[tid][:PAIRED]
            near = [phrases.texts[i] for i in phrases.local(central(node.rows, 50))] if best else []
            near = [(text, text.casefold()) for text in near]
            shown = [_display(p, near) for p in best]
            fallback = keyword_labeller(keywords[tid], [])
            ranked[tid] = _pairs([s for s in shown if s]) + [fallback]

    labels: dict[int, str] = {}
    by_depth: dict[int, list[tuple[int, int, _Node]]] = {}
    for tid, depth, parent, node in nodes:
        by_depth.setdefault(depth, []).append((tid, parent, node))
    for group in by_depth.values():

        def kept(tid: int, parent: int) -> bool:
            return tid in fixed and (parent < 0 or fixed[tid].lower() != labels[parent].lower())

        order = [(tid, p, nd) for tid, p, nd in group if nd.carried]  # fixed: parent's label
        rest = [(tid, p, nd) for tid, p, nd in group if not nd.carried]
        order += [x for x in rest if kept(x[0], x[1])]  # a refresh kept these, with their label
        order += sorted(
            (x for x in rest if not kept(x[0], x[1])), key=lambda x: (-x[2].rows.size, x[0])
        )
        taken: set[str] = set()
        raw = []
        for tid, parent, node in order:
            if node.carried:
                choice = labels[parent]
            elif kept(tid, parent):
                choice = fixed[tid]
            else:
                avoid = taken | ({labels[parent].lower()} if parent >= 0 else set())
                free = [c for c in ranked[tid] if c.lower() not in avoid]
                choice = free[0] if free else ranked[tid][0]
            taken.add(choice.lower())
            raw.append(choice)
        for (tid, _, _), label in zip(order, _unique_labels(raw), strict=True):
            labels[tid] = label
    return labels


def _pairs(names: list[str]) -> list[str]:
    """Labels of two phrases that share no word stem ("Stars & Galaxies"), best pairs first, then
    the phrases alone. One phrase names a topic less surely than BERTopic's four words: the
    label retrieval accuracy of ``benchmarks/topics.py`` fell behind theirs with one."""
    words = [n.lower().split() for n in names]

    def overlap(a: list[str], b: list[str]) -> bool:  # "Cosmology & Cosmological Models"
        return any(x == y or _same_stem(x, y) for x in a for y in b)

    pairs = [
        f"{names[i]} & {names[j]}"
        for i in range(min(len(names), 4))
        for j in range(i + 1, min(len(names), PAIRED))
        if not overlap(words[i], words[j])
    ]
    return pairs + names


def _rerank(
    ranked: dict[int, list[str]],
    cover: dict[int, dict[str, float]],
    nodes: dict[int, _Node],
    latent: np.ndarray,
    encode: Encoder,
) -> None:
    """Order each topic's candidates by cosine similarity to its centroid (KeyBERT-style) plus
    ``COVERAGE_WEIGHT`` times the share of its texts they are in: similarity alone favours
    narrow phrases ("Quantum Dots" for all of condensed matter)."""
    phrases = sorted({p for cands in ranked.values() for p in cands})
    if not phrases:
        return
    vectors = np.asarray(encode(phrases), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    row = {p: i for i, p in enumerate(phrases)}
    for tid, cands in ranked.items():
        if len(cands) < 2:
            continue
        cent = latent[nodes[tid].rows].mean(axis=0)
        sims = vectors[[row[p] for p in cands]] @ (cent / max(np.linalg.norm(cent), 1e-12))
        sims += COVERAGE_WEIGHT * np.array([cover[tid][p] for p in cands])
        ranked[tid] = [cands[i] for i in np.argsort(-sims, kind="stable")]
