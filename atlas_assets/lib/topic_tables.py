"""The topic tree as the tables the reference documents: per-datum labels, topic metadata and
the parent/child hierarchy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from atlas_assets.store.resources import topic_column

if TYPE_CHECKING:  # lib.topics imports scipy: the definitions load this module on every reload
    from atlas_assets.lib.topics import TopicTree


def datum_labels(tree: TopicTree) -> dict[str, pa.Array]:
    """``topic_depth_1..D`` columns: each datum's topic label per depth (never null: a topic
    that does not split carries on as a single child with its label)."""
    label_of = pd.Series(tree.topics["label"].to_numpy(), index=tree.topics["topic_id"])
    return {
        topic_column(d + 1): pa.array(
            label_of.reindex(tree.assignments[:, d]).to_numpy(dtype=object), pa.string()
        )
        for d in range(tree.depth)
    }


def topic_metadata(tree: TopicTree) -> pa.Table:
    """One row per topic in the reference's column order: ``depth, topic_id, topic_depth_1,
    topic_description, topic_short_description, topic_depth_2[, topic_depth_3]``."""
    topics = tree.topics.set_index("topic_id")
    paths: dict[int, list[str | None]] = {}
    for tid, row in topics.sort_values("depth").iterrows():
        parent = paths.get(int(row["parent_id"]), [None] * tree.depth)
        path = list(parent)
        path[int(row["depth"]) - 1] = row["label"]
        paths[int(tid)] = path
    ordered = tree.topics.sort_values(["depth", "topic_id"])
    ids = ordered["topic_id"].to_numpy(np.int64)
    columns: dict[str, pa.Array] = {
        "depth": pa.array(ordered["depth"].to_numpy(np.int64)),
        "topic_id": pa.array(ids),
        topic_column(1): pa.array([paths[int(t)][0] for t in ids], pa.string()),
        "topic_description": pa.array(["/".join(k) for k in ordered["keywords"]], pa.string()),
        "topic_short_description": pa.array(ordered["label"].tolist(), pa.string()),
    }
    for d in range(2, tree.depth + 1):
        columns[topic_column(d)] = pa.array([paths[int(t)][d - 1] for t in ids], pa.string())
    return pa.table(columns)


def hierarchy_table(tree: TopicTree) -> pa.Table:
    """Every topic with its parent and size: ``topic_id, depth, label, parent_id, size``."""
    t = tree.topics.sort_values(["depth", "topic_id"])
    return pa.table(
        {
            "topic_id": pa.array(t["topic_id"].to_numpy(np.int64)),
            "depth": pa.array(t["depth"].to_numpy(np.int64)),
            "label": pa.array(t["label"].tolist(), pa.string()),
            "parent_id": pa.array(t["parent_id"].to_numpy(np.int64)),
            "size": pa.array(t["size"].to_numpy(np.int64)),
        }
    )
