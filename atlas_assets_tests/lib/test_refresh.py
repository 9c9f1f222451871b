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
