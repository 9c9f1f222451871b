"""Unit tests of the topic tree on tiny synthetic data with known cluster structure."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest

from atlas_assets.lib.knn import knn_graph
from atlas_assets.lib.topics import (
    TopicTree,
    _knn_adjacency,
    _merge_plurals,
    _phrase_analyzer,
    _stop_words,
    _strip_math,
    _unique_labels,
    build_topic_tree,
    keyword_labeller,
)

VOCABS = [
    ["galaxy", "telescope", "nebula", "orbit", "comet", "stellar"],
    ["violin", "orchestra", "symphony", "melody", "concerto", "tempo"],
    ["tomato", "basil", "oven", "recipe", "garlic", "pasta"],
    ["goalkeeper", "striker", "league", "penalty", "stadium", "referee"],
]
FILLER = ["the", "and", "with", "about", "this", "very", "some"]


def blobs(
    n_per: int = 40, n_sub: int = 2, dim: int = 24, seed: int = 0
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Unit vectors in 4 well-separated blobs, each made of ``n_sub`` tighter sub-blobs.

    Returns ``(latent, texts, blob, sub)``; a blob's texts draw from its own vocabulary.
    """
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[: len(VOCABS)] * 4.0
    vecs, texts, blob, sub = [], [], [], []
    for b, words in enumerate(VOCABS):
        for s in range(n_sub):
            offset = rng.normal(size=dim)
            offset[: len(VOCABS)] = 0  # keep sub-blobs inside their blob's direction
            centre = centres[b] + 0.5 * offset / np.linalg.norm(offset)
            m = n_per // n_sub
            vecs.append(centre + 0.15 * rng.normal(size=(m, dim)))
            half = words[:3] if s == 0 else words[3:]
            for _ in range(m):
                picks = list(rng.choice(half, 3)) + list(rng.choice(words, 2))
                texts.append(" ".join(picks + list(rng.choice(FILLER, 3))))
            blob += [b] * m
            sub += [b * n_sub + s] * m
    latent = np.vstack(vecs).astype(np.float32)
    latent /= np.linalg.norm(latent, axis=1, keepdims=True)
    return latent, texts, np.array(blob), np.array(sub)


def build(latent, texts, k=10, **kw) -> TopicTree:
    knn = knn_graph(latent, k)
    coords = latent[:, :2].copy()
    return build_topic_tree(latent, knn, coords, texts, **kw)


def check_invariants(tree: TopicTree, n: int) -> None:
    """The tree's contract: every row has a topic at every depth, children nest in their parent,
    an unsplit topic carries on as one child with its label, labels unique within a depth."""
    a, t = tree.assignments, tree.topics
    assert a.dtype == np.int64 and a.shape[0] == n and a.shape[1] in (2, 3)
    assert list(t.columns) == ["topic_id", "depth", "parent_id", "label", "keywords", "size"]
    assert (a >= 0).all()  # every datum has a topic at every depth
    assert t.topic_id.is_unique
    by_id = t.set_index("topic_id")
    for d in range(1, a.shape[1]):
        # each row's topic at depth d + 1 is a child of its topic at depth d
        assert (by_id.loc[a[:, d], "parent_id"].to_numpy() == a[:, d - 1]).all()
        assert (by_id.loc[a[:, d], "depth"].to_numpy() == d + 1).all()
    for parent, children in t[t.depth > 1].groupby("parent_id"):
        if len(children) == 1:  # did not split: the same topic, one depth down
            child = children.iloc[0]
            assert child.label == by_id.loc[parent, "label"]
            assert child.keywords == by_id.loc[parent, "keywords"]
            assert child["size"] == by_id.loc[parent, "size"]
    assert (t[t.depth == 1].parent_id == -1).all()
    for d, group in t.groupby("depth"):
        assert group.label.is_unique
        assert all(isinstance(x, str) and x for x in group.label)
        counts = pd.Series(a[:, d - 1]).value_counts()
        assert (group.set_index("topic_id")["size"] == counts.reindex(group.topic_id)).all()
    assert all(isinstance(k, list) and len(k) <= 10 for k in t.keywords)


def test_recovers_blobs_and_sub_blobs():
    from sklearn.metrics import adjusted_rand_score

    latent, texts, blob, sub = blobs(n_per=60, n_sub=2)
    tree = build(latent, texts)
    check_invariants(tree, len(texts))
    assert tree.assignments.shape == (len(texts), 3)
    assert adjusted_rand_score(blob, tree.assignments[:, 0]) > 0.9
    assert adjusted_rand_score(sub, tree.assignments[:, 1]) > 0.75


def test_keywords_differentiate():
    latent, texts, blob, _ = blobs()
    tree = build(latent, texts)
    top = tree.topics[tree.topics.depth == 1]
    for _, row in top.iterrows():
        members = tree.assignments[:, 0] == row.topic_id
        b = np.bincount(blob[members]).argmax()
        assert set(row.keywords[:6]) & set(VOCABS[b]), (row.label, row.keywords)
        others = {w for i, v in enumerate(VOCABS) if i != b for w in v}
        assert not set(row.keywords[:3]) & others
        assert not set(row.keywords) & {"the", "and", "with", "about", "this"}  # stop words


def test_deterministic_for_seed():
    latent, texts, _, _ = blobs()
    a = build(latent, texts, seed=3)
    b = build(latent, texts, seed=3)
    assert np.array_equal(a.assignments, b.assignments)
    pd.testing.assert_frame_equal(a.topics, b.topics)


@pytest.mark.skipif(sys.platform != "linux", reason="the forked workers run on Linux only")
def test_forked_workers_grow_the_same_tree(monkeypatch, tmp_path):
    """Large corpora grow each depth-1 topic's subtree in forked workers, and count the keywords'
    document-term matrix in another: the same tree and topics as in-process."""
    import atlas_assets.lib.forked as forked
    import atlas_assets.lib.topics as topics

    latent, texts, _, _ = blobs(n_per=80, n_sub=2)
    serial = build(latent, texts, seed=2)
    pids = tmp_path / "pids"

    def noting_pid(fn):
        def run(*args):
            with pids.open("a") as f:  # a file: a worker's memory is its own
                f.write(f"{fn.__name__} {os.getpid()}\n")
            return fn(*args)

        return run

    monkeypatch.setattr(topics._Splitter, "grow_subtree", noting_pid(topics._Splitter.grow_subtree))
    monkeypatch.setattr(topics, "_doc_term", noting_pid(topics._doc_term))
    monkeypatch.setattr(topics, "PARALLEL_TOPICS_ROWS", 0)
    monkeypatch.setattr(forked, "cores", lambda: 2)
    parallel = build(latent, texts, seed=2)
    ran = [line.split() for line in pids.read_text().splitlines()]
    assert {name for name, _ in ran} == {"grow_subtree", "_doc_term"}
    assert str(os.getpid()) not in {pid for _, pid in ran}  # all of it in workers
    np.testing.assert_array_equal(parallel.assignments, serial.assignments)
    pd.testing.assert_frame_equal(parallel.topics, serial.topics)


def test_leiden_iterates_until_stable_on_small_corpora_only():
    from atlas_assets.lib.topics import LEIDEN_CONVERGE_ROWS, leiden_iterations

    assert leiden_iterations(LEIDEN_CONVERGE_ROWS) == -1
    assert leiden_iterations(LEIDEN_CONVERGE_ROWS + 1) == 2


def test_outliers_are_assigned_not_dropped():
    latent, texts, _, _ = blobs()
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(8, latent.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    latent = np.vstack([latent, noise])
    texts = texts + ["random noise words here"] * 8
    tree = build(latent, texts)
    check_invariants(tree, len(texts))
    assert tree.topics[tree.topics.depth == 1]["size"].sum() == len(texts)


@pytest.mark.parametrize("n", [1, 2, 5, 30])
def test_small_n(n):
    latent, texts, _, _ = blobs(n_per=10)
    latent, texts = latent[:: max(1, len(texts) // n)][:n], texts[:: max(1, len(texts) // n)][:n]
    tree = build(latent, texts, k=10, max_depth=2)
    check_invariants(tree, n)
    assert tree.assignments.shape == (n, 2)
    assert (tree.topics.depth == 1).sum() >= 1


def test_empty_and_stopword_only_texts():
    latent, _, _, _ = blobs(n_per=10)
    texts = ["the and of"] * len(latent)
    tree = build(latent, texts)
    check_invariants(tree, len(texts))
    assert build(latent[:0], []).topics.empty


def test_validation():
    latent, texts, _, _ = blobs(n_per=10)
    with pytest.raises(ValueError):
        build(latent, texts, max_depth=4)
    with pytest.raises(ValueError):
        build(latent, texts[:-1])


def test_custom_labeller_and_unique_labels():
    latent, texts, _, _ = blobs()
    tree = build(latent, texts, labeller=lambda kw, central: "Same")
    for _, group in tree.topics.groupby("depth"):
        labels = list(group.label)
        assert labels.count("Same") == 1 and len(set(labels)) == len(labels)
        assert all(x == "Same" or x.startswith("Same (") for x in labels)
    assert _unique_labels(["A", "A (2)", "A"]) == ["A", "A (2)", "A (3)"]


def test_keyword_labeller():
    label = keyword_labeller(["tennis", "nadal", "open", "serve"], ["Nadal wins the open"])
    assert label == "Tennis, Nadal, Open"
    assert keyword_labeller([], []) == "Miscellaneous"
    assert keyword_labeller(["NASA", "rocket"], []) == "NASA, Rocket"


def test_a_topic_that_does_not_split_carries_on():
    latent, texts, blob, _ = blobs(n_per=40, n_sub=1)  # 4 blobs without sub-structure
    tree = build(latent, texts)
    check_invariants(tree, len(texts))
    t = tree.topics.set_index("topic_id")
    deeper = t[t.depth > 1]
    assert len(deeper) and (deeper.groupby("parent_id").size() == 1).all()
    assert (deeper.label.to_numpy() == t.loc[deeper.parent_id, "label"].to_numpy()).all()
    # the same datums all the way down
    for d in range(1, tree.depth):
        assert (
            t.loc[tree.assignments[:, d], "parent_id"].to_numpy() == tree.assignments[:, d - 1]
        ).all()


@pytest.mark.parametrize("community", ["leiden", "louvain"])
def test_every_topic_is_connected_in_the_knn_graph(community):
    """Leiden guarantees connected communities; noise joins a neighbour's topic, so each topic
    stays one connected piece of the graph."""
    from scipy.sparse.csgraph import connected_components

    latent, texts, _, _ = blobs(n_per=60, n_sub=3, seed=4)
    knn = knn_graph(latent, 10)
    tree = build_topic_tree(latent, knn, latent[:, :2], texts, community=community)
    check_invariants(tree, len(texts))
    A = _knn_adjacency(knn, len(texts))
    for d in range(tree.depth):
        for tid in np.unique(tree.assignments[:, d]):
            rows = np.flatnonzero(tree.assignments[:, d] == tid)
            assert connected_components(A[rows][:, rows], directed=False)[0] == 1


def test_unknown_cluster_method_or_community():
    latent, texts, _, _ = blobs(n_per=10)
    with pytest.raises(ValueError, match="cluster_method"):
        build(latent, texts, cluster_method="kmeans")
    with pytest.raises(ValueError, match="community"):
        build(latent, texts, community="infomap")


def test_hdbscan_route_recovers_blobs_and_assigns_noise():
    from sklearn.metrics import adjusted_rand_score

    latent, texts, blob, sub = blobs(n_per=100, n_sub=2)
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(12, latent.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    latent = np.vstack([latent, noise])
    texts = texts + ["random noise words here"] * 12
    tree = build(latent, texts, k=30, cluster_method="hdbscan")
    check_invariants(tree, len(texts))
    assert 0 <= tree.noise < len(texts) // 2  # real texts leave noise: test_topics_real.py
    finest = tree.assignments[: len(blob), -1]
    assert adjusted_rand_score(sub, finest) > 0.6
    # every finest topic lies within one blob: the tree nests
    for tid in np.unique(finest):
        assert len(np.unique(blob[finest == tid])) == 1
    again = build(latent, texts, k=30, cluster_method="hdbscan")
    assert np.array_equal(again.assignments, tree.assignments)  # seeded


def test_phrases_skip_stop_words_formulas_and_repeats():
    analyze = _phrase_analyzer(_stop_words())
    text = _strip_math(r"Let $\frac{1}{2} \pi$ be black holes. We show the black hole tempo tempo")
    phrases = set(analyze(text))
    assert {"black holes", "black hole", "black", "hole", "holes"} <= phrases
    assert not {"frac", "pi", "let", "show", "tempo tempo"} & phrases
    assert not any("holes black" in p for p in phrases)  # never across a full stop


def test_plurals_merge_into_the_singular():
    import scipy.sparse as sp

    vocab = np.array(["black hole", "black holes", "galaxies", "galaxy", "physics", "news"])
    X = sp.csr_matrix(np.array([[1, 1, 0, 1, 1, 0], [0, 1, 1, 0, 0, 1]], dtype=np.float32))
    merged, kept = _merge_plurals(X, vocab)
    assert list(kept) == ["black hole", "galaxy", "physics", "news"]
    assert merged.toarray().tolist() == [[1, 1, 1, 0], [1, 1, 0, 1]]  # still 0/1


def test_labels_are_phrases_distinct_among_siblings():
    latent, _, blob, _ = blobs(n_per=60, n_sub=1)
    names = ["black holes", "string theory", "gene expression", "stock market"]
    rng = np.random.default_rng(2)
    texts = []
    for b in blob:
        words = list(rng.choice(VOCABS[b], 3)) + list(rng.choice(FILLER, 3))
        texts.append(f"We study {names[b]} here. " + " ".join(words) + r" with $\alpha$.")
    tree = build(latent, texts)
    top = tree.topics[tree.topics.depth == 1]
    for _, row in top.iterrows():
        b = np.bincount(blob[tree.assignments[:, 0] == row.topic_id]).argmax()
        first = row.label.split(" & ")[0]  # the best phrase leads
        assert first.lower().rstrip("s") == names[b].rstrip("s"), row.label


def test_a_topic_that_splits_only_deeper_keeps_its_children():
    """An HDBSCAN cluster can stay whole at depth 2 and split at depth 3: it carries on at
    depth 2 and its children appear at depth 3; a deepest level of copies only is dropped."""
    from atlas_assets.lib.topics import _flatten, _Node

    a, b = np.arange(0, 6), np.arange(6, 10)
    root = _Node(np.arange(10), [_Node(a), _Node(b)])
    root.children[0].children = [_Node(a, [_Node(a[:3]), _Node(a[3:])], carried=True)]
    nodes = _flatten(root, 3)
    depth_of = [(d, p, node.rows.size, node.carried) for _, d, p, node in nodes]
    assert depth_of == [
        (1, -1, 6, False),
        (1, -1, 4, False),
        (2, 0, 6, True),
        (2, 1, 4, True),
        (3, 2, 3, False),
        (3, 2, 3, False),
        (3, 3, 4, True),
    ]
    flat = _Node(np.arange(10), [_Node(a), _Node(b)])
    flat.children[0].children = [_Node(a, carried=True)]
    assert max(d for _, d, _, _ in _flatten(flat, 3)) == 2  # nothing split below depth 1


@pytest.mark.parametrize("igraph_order", ["as built", "shuffled"])
def test_induced_subgraph_weights_follow_igraphs_edge_order(igraph_order, monkeypatch):
    """A split's subgraph carries its weights as an array in igraph's edge order; if igraph ever
    lists the edges in another order, they are looked up edge by edge."""
    import igraph as ig

    from atlas_assets.lib.topics import _Graph, _igraph, _induced

    latent, _, _, _ = blobs(n_per=40)
    A = _knn_adjacency(knn_graph(latent, 8), len(latent))
    graph = _igraph(A)
    if igraph_order == "shuffled":
        built = graph.g

        class Shuffling:  # igraph's induced subgraph, its edges in another order
            def induced_subgraph(self, members, implementation):
                g = built.induced_subgraph(members, implementation=implementation)
                edges = g.get_edgelist()[::-1]
                return ig.Graph(n=g.vcount(), edges=edges)

        graph = _Graph(Shuffling(), graph.weights)
    members = np.sort(np.random.default_rng(0).choice(len(latent), 60, replace=False))
    sub = A[members][:, members].tocsr()
    listed = []  # whole edge lists igraph was asked for: the slow path's lookup
    edgelist = ig.Graph.get_edgelist
    monkeypatch.setattr(ig.Graph, "get_edgelist", lambda g: (listed.append(1), edgelist(g))[1])
    induced = _induced(graph, members, sub)
    monkeypatch.undo()
    assert len(listed) == (0 if igraph_order == "as built" else 2)  # 2: Shuffling's own, ours
    ends = np.array(induced.g.get_edgelist())
    assert len(ends) == induced.weights.size == sub.nnz // 2 > 0
    np.testing.assert_array_equal(induced.weights, np.asarray(sub[ends[:, 0], ends[:, 1]]).ravel())
