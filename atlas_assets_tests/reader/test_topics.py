"""AtlasMapTopics on the real built map: the reference's tables and every accessor's contract."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def topics(built):
    return built[1].topics


def test_df_columns_labels_and_alignment(built, topics):
    _, _, frame = built
    df = topics.df
    depth = topics.depth
    assert depth in (2, 3)
    assert list(df.columns) == ["arxiv_id"] + [f"topic_depth_{d}" for d in range(1, depth + 1)]
    assert df["arxiv_id"].tolist() == frame["arxiv_id"].tolist()
    # Every datum has a topic at every depth, as in the reference's own table.
    assert df.notna().all().all()
    assert topics.tb.num_rows == len(frame)


def test_unsplit_topics_carry_on_with_their_label(topics):
    """A topic that does not split has one child with its label, keywords and datums; every
    topic above the deepest depth is a key of the hierarchy."""
    meta, df = topics.metadata, topics.df
    for d in range(1, topics.depth):
        for label in meta.loc[meta["depth"] == d, "topic_short_description"]:
            children = topics.hierarchy[(label, d)]
            below = set(df.loc[df[f"topic_depth_{d}"] == label, f"topic_depth_{d + 1}"])
            assert below == set(children)
            if len(children) == 1:
                assert children == [label]
                own = meta[(meta["depth"] == d) & (meta["topic_short_description"] == label)]
                child = meta[(meta["depth"] == d + 1) & (meta["topic_short_description"] == label)]
                assert own["topic_description"].tolist() == child["topic_description"].tolist()
    groups = topics.group_by_topic(topics.depth)
    assert sum(len(g["datum_ids"]) for g in groups) == len(df)


def test_metadata_columns_and_ancestor_paths(topics):
    meta = topics.metadata
    expected = [
        "depth",
        "topic_id",
        "topic_depth_1",
        "topic_description",
        "topic_short_description",
        "topic_depth_2",
    ]
    assert list(meta.columns)[:6] == expected
    assert meta["topic_id"].is_unique
    for d, group in meta.groupby("depth"):
        assert group["topic_short_description"].is_unique  # labels unique within a depth
        assert (group[f"topic_depth_{d}"] == group["topic_short_description"]).all()
        for below in range(d + 1, topics.depth + 1):
            assert group[f"topic_depth_{below}"].isna().all()
    assert meta["topic_description"].str.contains("/").all()
    # every label used in df is a topic of metadata at that depth
    for d in range(1, topics.depth + 1):
        labels = set(meta.loc[meta["depth"] == d, "topic_short_description"])
        assert set(topics.df[f"topic_depth_{d}"].dropna()) <= labels


def test_hierarchy_nests(topics):
    df = topics.df
    for (label, depth), children in topics.hierarchy.items():
        rows = df[df[f"topic_depth_{depth}"] == label]
        assert set(rows[f"topic_depth_{depth + 1}"]) == set(children)


def test_group_by_topic(built, topics):
    groups = topics.group_by_topic(1)
    keys = {
        "subtopics",
        "subtopic_ids",
        "topic_id",
        "topic_short_description",
        "topic_long_description",
        "datum_ids",
    }
    assert all(set(g) == keys for g in groups)
    assert all(isinstance(g["datum_ids"], set) for g in groups)
    all_ids = set().union(*(g["datum_ids"] for g in groups))
    assert all_ids == set(built[2]["arxiv_id"])
    meta = topics.metadata.set_index("topic_id")
    for g in groups:
        assert meta.loc[g["topic_id"], "topic_short_description"] == g["topic_short_description"]
        assert set(meta.loc[g["subtopic_ids"], "topic_short_description"]) == set(g["subtopics"])
    for bad in (0, topics.depth + 1, "1"):
        with pytest.raises(ValueError, match="topic_depth"):
            topics.group_by_topic(bad)


def test_topic_density_counts_an_inclusive_window(built, topics):
    _, _, frame = built
    times = pd.to_datetime(frame["v1_created"])
    start, end = times.sort_values().iloc[[10, 60]]
    density = topics.get_topic_density("v1_created", start.to_pydatetime(), end.to_pydatetime())
    inside = (times >= start) & (times <= end)
    depth1 = [d for d in density if d["depth"] == 1]
    assert sum(d["count"] for d in depth1) == inside.sum()
    assert [d["count"] for d in density] == sorted((d["count"] for d in density), reverse=True)
    assert set(density[0]) == {"topic", "depth", "topic_id", "count"}
    only2 = topics.get_topic_density("v1_created", start, end, depth=2)
    assert only2 == [d for d in density if d["depth"] == 2]
    aware = topics.get_topic_density(
        "v1_created", start.tz_localize(UTC).to_pydatetime(), end.tz_localize(UTC)
    )
    assert aware == density
    with pytest.raises(ValueError, match="no field"):
        topics.get_topic_density("nope", datetime(2007, 1, 1), datetime(2008, 1, 1))
    with pytest.raises(ValueError, match="not ISO timestamps|not timestamps"):
        topics.get_topic_density("title", datetime(2007, 1, 1), datetime(2008, 1, 1))


def test_vector_search_topics(built, topics):
    _, atlas_map, _ = built
    latent = atlas_map.embeddings.latent
    result = topics.vector_search_topics(latent[:3], k=8, depth=1)
    assert list(result) == ["topics"] and len(result["topics"]) == 3
    for dist in result["topics"]:
        assert sum(dist.values()) == pytest.approx(1.0)
        assert set(dist) <= set(topics.metadata["topic_short_description"])
    own = topics.df["topic_depth_1"].iloc[0]
    assert max(result["topics"][0], key=result["topics"][0].get) == own
    with pytest.raises(ValueError, match="384 columns"):
        topics.vector_search_topics(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="depth"):
        topics.vector_search_topics(latent[:1], depth=9)
