"""Refreshes that keep the map: matching topics by overlap, alignment by id, the pinned layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas_assets.lib.layout import optimize_layout
from atlas_assets.lib.refresh import (
    PriorTopics,
    aligned_coords,
    describe_changes,
    kept_share,
    match_topics,
    movement,
    positions,
)


def test_positions_align_by_id_whatever_the_order():
    assert positions(["a", "b", "c"], ["c", "x", "a"]).tolist() == [2, -1, 0]
    coords = np.array([[0, 0], [1, 1], [2, 2]], np.float32)
    out = aligned_coords(["a", "b", "c"], coords, ["c", "x", "a"])
    assert out[0].tolist() == [2, 2] and np.isnan(out[1]).all() and out[2].tolist() == [0, 0]


def test_matching_tells_kept_split_merged_new_and_gone():
    # old topics (10 rows each): 1 stays, 2 splits in two, 3 and 4 merge, 5 loses its rows
    old = np.repeat([1, 2, 3, 4, 5], 10)
    new = np.concatenate([np.repeat(11, 10), np.repeat([12, 13], 5), np.repeat(14, 20)])
    new = np.concatenate([new, np.repeat(15, 10)])  # rows of 5 removed; 10 new rows
    old = np.concatenate([old[:40], np.full(10, -1)])
    m = match_topics(new, old, {1: 10, 2: 10, 3: 10, 4: 10, 5: 10})
    assert m.kept == {11: 1}
    assert sorted(m.parts[2]) == [12, 13] and sorted(m.sources[14]) == [3, 4]
    labels_old = {1: "One", 2: "Two", 3: "Three", 4: "Four", 5: "Five"}
    labels_new = {11: "One", 12: "Two a", 13: "Two b", 14: "Three & Four", 15: "Fresh"}
    report = describe_changes([m], labels_new, labels_old)["depth 1"]
    assert {k: report[k] for k in ("kept", "split", "merged", "new", "gone")} == {
        "kept": 1,
        "split": 1,
        "merged": 1,
        "new": 1,
        "gone": 1,
    }
    assert report["splits"] == ["Two -> Two a, Two b"]
    assert report["merges"] == ["Three, Four -> Three & Four"]
    assert report["new_topics"] == ["Fresh"] and report["gone_topics"] == ["Five"]


def test_a_majority_both_ways_keeps_a_topic_that_grew_or_shrank():
    old = np.concatenate([np.repeat(7, 8), np.full(6, -1)])  # 8 old rows, 6 new ones join
    m = match_topics(np.zeros(14, np.int64), old, {7: 10})  # 2 of its rows were removed
    assert m.kept == {0: 7}
    m = match_topics(
        np.zeros(14, np.int64), np.concatenate([np.repeat(7, 6), np.full(8, -1)]), {7: 6}
    )
    assert m.kept == {}  # more new rows than old ones: a new topic that drew from 7
    assert m.sources[0] == [7]


def test_prior_topics_read_the_published_tables():
    per_datum = pd.DataFrame(
        {"id": ["a", "b", "c"], "topic_depth_1": ["X", "Y", "X"], "topic_depth_2": ["X", "Y", "X"]}
    )
    hierarchy = pd.DataFrame(
        {
            "topic_id": [0, 1, 2, 3],
            "depth": [1, 1, 2, 2],
            "label": ["X", "Y", "X", "Y"],
            "parent_id": [-1, -1, 0, 1],
            "size": [2, 1, 2, 1],
        }
    )
    carry = PriorTopics.from_tables(per_datum, hierarchy).aligned(["c", "new", "a"])
    assert carry.assignments.tolist() == [[0, 2], [-1, -1], [0, 2]]
    assert carry.next_id == 4 and carry.sizes_at(2) == {2: 2, 3: 1} and carry.new_rows == 1
    bad = hierarchy.assign(label=["X", "Z", "X", "Y"])
    with pytest.raises(ValueError, match="depth-1 label"):
        PriorTopics.from_tables(per_datum, bad)


def test_kept_share_and_movement():
    assert (
        kept_share(["a", "b"], [1, 2], ["A", "B"], ["b", "a", "c"], [2, 1, 9], ["B", "A", "C"]) == 1
    )
    assert kept_share(["a", "b"], [1, 2], ["A", "B"], ["b", "a"], [2, 1], ["B", "Z"]) == 0.5
    old = np.array([[0, 0], [10, 0], [5, 5]], float)
    new = np.array([[10, 1], [0, 0], [5, 5]], float)  # reordered; one point moved by 1
    assert movement(["a", "b", "c"], old, ["b", "a", "c"], new) == 0.0  # median of 0, 1, 0
    assert movement(["a", "b"], old[:2], ["b", "a"], new[:2]) == pytest.approx(0.05)


def test_a_zero_rate_pins_a_point_of_the_layout():
    import scipy.sparse

    rng = np.random.default_rng(0)
    n = 60
    graph = scipy.sparse.random(n, n, density=0.1, random_state=1, format="csr")
    graph = (graph + graph.T).tocsr()
    init = rng.normal(size=(n, 2)).astype(np.float32)
    rates = np.where(np.arange(n) % 2 == 0, 0.0, 1.0).astype(np.float32)
    out = optimize_layout(graph, init, a=1.58, b=0.9, n_epochs=50, rates=rates)
    np.testing.assert_array_equal(out[::2], init[::2])
    assert np.abs(out[1::2] - init[1::2]).max() > 0.1
    with pytest.raises(ValueError, match="rates"):
        optimize_layout(graph, init, a=1.58, b=0.9, n_epochs=5, rates=np.ones(3))


# ---------------------------------------------------------------------------------------------
# On real vectors: arXiv physics abstracts (the bundled sample), then BBC sport articles.


@pytest.fixture(scope="module")
def physics(arxiv):
    from atlas_assets.lib.embed import embed_texts

    frame = arxiv[arxiv["group"] == "physics"].head(250)
    texts = frame["abstract"].fillna("").tolist()
    return frame["arxiv_id"].tolist(), texts, embed_texts(texts)


def _tree(ids, texts, latent, prior=None):
    from atlas_assets.lib.knn import knn_graph
    from atlas_assets.lib.topics import build_topic_tree

    knn = knn_graph(latent, 30)
    carry = None if prior is None else prior.aligned(ids)
    return build_topic_tree(latent, knn, latent[:, :2], texts, previous=carry)


def _prior(ids, tree) -> PriorTopics:
    """The tree as a rebuild reads it back: from the published tables."""
    from atlas_assets.lib.topic_tables import datum_labels, hierarchy_table

    labels = {k: v.to_pylist() for k, v in datum_labels(tree).items()}
    per_datum = pd.DataFrame({"id": ids, **labels})
    return PriorTopics.from_tables(per_datum, hierarchy_table(tree).to_pandas())


def _by_id(ids, tree) -> pd.DataFrame:
    """Each datum's topic id and label per depth, indexed by id."""
    label = dict(zip(tree.topics.topic_id, tree.topics.label, strict=True))
    out = {}
    for d in range(tree.depth):
        out[f"id{d + 1}"] = tree.assignments[:, d]
        out[f"label{d + 1}"] = [label[t] for t in tree.assignments[:, d]]
    return pd.DataFrame(out, index=ids).sort_index()


def test_a_refresh_of_unchanged_rows_changes_nothing_even_reordered(physics):
    from atlas_assets.lib.knn import knn_graph
    from atlas_assets.lib.project import project

    ids, texts, latent = physics
    first = _tree(ids, texts, latent)
    order = np.random.default_rng(0).permutation(len(ids))  # rows may come in another order
    shuffled = [ids[i] for i in order], [texts[i] for i in order], latent[order]
    again = _tree(*shuffled, prior=_prior(ids, first))
    pd.testing.assert_frame_equal(_by_id(shuffled[0], again), _by_id(ids, first))
    cols = ["topic_id", "depth", "parent_id", "label", "keywords", "size"]
    a = again.topics[cols].sort_values("topic_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        a, first.topics[cols].sort_values("topic_id").reset_index(drop=True)
    )
    assert all(
        c["kept"] == len(first.topics[first.topics.depth == int(d[-1])])
        for d, c in again.changes.items()
    )

    coords = project(latent, knn_graph(latent, 30))
    kept = project(latent[order], knn_graph(latent[order], 30), initial=coords[order])
    np.testing.assert_array_equal(kept, coords[order])


def test_rows_that_form_a_new_cluster_make_a_new_topic_and_leave_the_others_alone(physics):
    from atlas_assets.lib.embed import embed_texts
    from atlas_assets_tests.conftest import SHARED_DATASETS
    from atlas_assets_tests.lib.test_topics import check_invariants

    path = SHARED_DATASETS / "bbc_news" / "bbc_news.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} not found (../shared/datasets is not beside this checkout)")
    ids, texts, latent = physics
    first = _tree(ids, texts, latent)
    sport = pd.read_csv(path).query("category == 'sport'").head(40)
    new_texts = (sport["title"] + ". " + sport["text"]).tolist()
    all_ids = ids + sport["doc_id"].tolist()
    grown = _tree(
        all_ids, texts + new_texts, np.vstack([latent, embed_texts(new_texts)]), _prior(ids, first)
    )
    check_invariants(grown, len(all_ids))
    # every old topic keeps its id, label and rows; the sport articles are a new topic at
    # every depth, with an id no old topic had
    before, after = _by_id(ids, first), _by_id(all_ids, grown).loc[sorted(ids)]
    pd.testing.assert_frame_equal(after, before)
    old_ids = set(first.topics.topic_id)
    for d in range(1, grown.depth + 1):
        sport_topics = set(grown.assignments[len(ids) :, d - 1])
        assert len(sport_topics) == 1 and not sport_topics & old_ids
        assert grown.changes[f"depth {d}"]["new"] == 1
        assert {grown.changes[f"depth {d}"][k] for k in ("split", "merged", "gone")} == {0}
    # from scratch, the same rows give other ids and labels (what a refresh avoids)
    scratch = _by_id(
        all_ids, _tree(all_ids, texts + new_texts, np.vstack([latent, embed_texts(new_texts)]))
    )
    assert not scratch.loc[sorted(ids)].equals(before)


def test_duplicate_clusters_keep_their_ids_across_a_refresh():
    from atlas_assets.lib.refresh import carry_cluster_ids

    old_ids = ["a", "b", "c", "d", "e"]
    old = np.array([0, 1, 1, 2, 3])  # b, c duplicates; a, d, e alone
    # "z" is new and joins d; "a" was removed; rows come in another order
    ids = ["e", "d", "c", "z", "b", "y"]
    new = np.array([0, 1, 2, 1, 2, 3])  # numbered by first row, as find_duplicates does
    out = carry_cluster_ids(old_ids, old, ids, new)
    assert out.tolist() == [3, 2, 1, 2, 1, 4]  # e, d(+z), b+c keep theirs; y takes a new one
    assert carry_cluster_ids([], np.array([], np.int64), ids, new).tolist() == new.tolist()
