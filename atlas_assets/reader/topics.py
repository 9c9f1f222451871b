"""``AtlasMapTopics``: the map's hierarchical topics, as the reference documents them."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from atlas_assets.reader.map import AtlasMap


def _utc_naive(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


class AtlasMapTopics:
    """Hierarchical topics: per-datum labels (``df``/``tb``), per-topic ``metadata``, the
    ``hierarchy`` and helpers to group, count over time and place new vectors."""

    def __init__(self, atlas_map: AtlasMap) -> None:
        if not atlas_map.index_config.topics_enabled:
            raise ValueError(
                "the topic model is off for this map: "
                "rebuild it with create_index(topic_model=True)"
            )
        self._map = atlas_map

    @cached_property
    def tb(self) -> pa.Table:
        """``[id, topic_depth_1, ..., topic_depth_D]``, memory-mapped, in dataset order."""
        return self._map.read("topics")

    @property
    def df(self) -> pd.DataFrame:
        """Each datum's topic label at every depth, never null: a topic that does not split
        carries on as a single child with its label."""
        return self.tb.to_pandas()

    @property
    def depth(self) -> int:
        """How many depths the tree has (2 or 3)."""
        return self.tb.num_columns - 1

    @cached_property
    def metadata(self) -> pd.DataFrame:
        """One row per topic: ``depth, topic_id, topic_depth_1, topic_description`` (keywords
        joined by ``/``), ``topic_short_description`` (the label), ``topic_depth_2..D``."""
        return self._map.read("metadata").to_pandas()

    @cached_property
    def _tree(self) -> pd.DataFrame:
        return self._map.read("hierarchy").to_pandas()

    @cached_property
    def hierarchy(self) -> dict[tuple[str, int], list[str]]:
        """``{(label, depth): [child labels]}`` for every topic that has subtopics."""
        tree = self._tree
        label_of = dict(
            zip(tree["topic_id"], zip(tree["label"], tree["depth"], strict=True), strict=True)
        )
        result: dict[tuple[str, int], list[str]] = {}
        for row in tree[tree["parent_id"] >= 0].itertuples():
            result.setdefault(label_of[row.parent_id], []).append(row.label)
        return result

    def group_by_topic(self, topic_depth: int = 1) -> list[dict[str, Any]]:
        """The topics at ``topic_depth`` with their subtopics and the ids of their datums.

        Each dict has exactly ``subtopics``, ``subtopic_ids``, ``topic_id``,
        ``topic_short_description``, ``topic_long_description`` and ``datum_ids`` (a set).
        """
        if not isinstance(topic_depth, int) or not 1 <= topic_depth <= self.depth:
            raise ValueError(f"topic_depth must be between 1 and {self.depth}, got {topic_depth!r}")
        tree, meta = self._tree, self.metadata.set_index("topic_id")
        ids = self.tb.column(0).to_numpy(zero_copy_only=False)
        labels = self.tb.column(topic_depth).to_numpy(zero_copy_only=False)
        members = pd.Series(ids).groupby(labels).agg(set)
        groups = []
        for row in tree[tree["depth"] == topic_depth].itertuples():
            children = tree[tree["parent_id"] == row.topic_id]
            groups.append(
                {
                    "subtopics": children["label"].tolist(),
                    "subtopic_ids": children["topic_id"].astype(int).tolist(),
                    "topic_id": int(row.topic_id),
                    "topic_short_description": row.label,
                    "topic_long_description": meta.loc[row.topic_id, "topic_description"],
                    "datum_ids": set(members.get(row.label, set())),
                }
            )
        return groups

    def get_topic_density(
        self, time_field: str, start: datetime, end: datetime, *, depth: int | None = None
    ) -> list[dict[str, Any]]:
        """How many datums of each topic have ``start <= time_field <= end``.

        ``time_field`` is a timestamp column or a column of ISO-format strings. Returns
        ``{"topic", "depth", "topic_id", "count"}`` dicts, largest count first, for every depth
        (or only ``depth=``).
        """
        data = self._map.data.tb
        if time_field not in data.column_names:
            raise ValueError(f"no field {time_field!r}; fields are {data.column_names}")
        column = data.column(time_field)
        if not (
            pa.types.is_timestamp(column.type)
            or pa.types.is_date(column.type)
            or pa.types.is_string(column.type)  # stored text is never large_string
        ):
            raise ValueError(f"field {time_field!r} holds {column.type}, not timestamps")
        try:
            times = pd.to_datetime(column.to_pandas(), utc=True, format="ISO8601")
        except (ValueError, TypeError) as err:
            raise ValueError(f"field {time_field!r} is not ISO timestamps: {err}") from None
        times = times.dt.tz_localize(None)
        inside = ((times >= _utc_naive(start)) & (times <= _utc_naive(end))).to_numpy()
        depths = range(1, self.depth + 1) if depth is None else [depth]
        if depth is not None and depth not in range(1, self.depth + 1):
            raise ValueError(f"depth must be between 1 and {self.depth}, got {depth}")
        topic_id = {(r.label, r.depth): int(r.topic_id) for r in self._tree.itertuples()}
        counts = []
        for d in depths:
            labels = pd.Series(self.tb.column(d).to_numpy(zero_copy_only=False)[inside])
            for label, count in labels.value_counts().items():
                counts.append(
                    {
                        "topic": label,
                        "depth": d,
                        "topic_id": topic_id[(label, d)],
                        "count": int(count),
                    }
                )
        return sorted(counts, key=lambda c: (-c["count"], c["depth"], c["topic_id"]))

    def vector_search_topics(
        self, queries: np.ndarray, k: int = 32, depth: int = 3
    ) -> dict[str, list[dict[str, float]]]:
        """For each query vector, a distribution over topics at ``depth`` (probabilities
        summing to 1) from the topics of its ``k`` nearest datums in latent space.

        With a tree shallower than ``depth``, its deepest topics are used.
        Returns ``{"topics": [ {label: probability, ...} for each query ]}``.
        """
        if not isinstance(depth, int) or not 1 <= depth <= 3:
            raise ValueError(f"depth must be 1, 2 or 3, got {depth!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        neighbor_ids, _ = self._map.embeddings.vector_search(queries=queries, k=k)
        labels = self.df.set_index(self.tb.column_names[0]).iloc[:, : min(depth, self.depth)]
        deepest = labels.ffill(axis=1).iloc[:, -1]
        result = []
        for ids in neighbor_ids:
            shares = deepest.loc[ids].value_counts(normalize=True)
            result.append({str(label): float(p) for label, p in shares.items()})
        return {"topics": result}

    def __repr__(self) -> str:
        per_depth = self.metadata.groupby("depth").size().to_dict()
        return f"AtlasMapTopics({per_depth} topics per depth)"
