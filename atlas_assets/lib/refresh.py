"""Refreshes that keep the map: what a rebuild carries over from the previous build.

A map is learnt by its users: where a region is, what its topics are called. When a map is
rebuilt over data that grew (or shrank), the previous build is read back as a :class:`PriorTopics`
and a set of coordinates, aligned by id to the new rows (rows may be added, removed or
reordered), and handed to :func:`atlas_assets.lib.topics.build_topic_tree` (``previous=``) and
:func:`atlas_assets.lib.project.project` (``initial=``). This module holds the pure parts: the
alignment, matching new topics to old ones by overlap (:func:`match_topics`) and the figures a
refresh reports (:func:`movement`, :func:`kept_share`).

Matching, at each depth: a new topic *keeps* an old one's id and label when more than half of the
new topic's rows were in the old topic and more than half of the old topic's rows are in the new
one (a majority both ways, so a match is one to one). A new topic *draws from* an old topic when
their overlap is at least ``DRAW_SHARE`` of the smaller of the two; an old topic that several new
topics draw from has *split*, a new topic that draws from several old ones is *merged*, an
unmatched new topic that draws from none is *new*, and an old topic that nothing matches or draws
from is *gone*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# A new topic draws from an old one when they share this much of the smaller of the two.
DRAW_SHARE = 0.25
# Events listed by name in the report (counts are always complete).
LISTED = 20


@dataclass(frozen=True)
class PriorTopics:
    """The previous build's topics: ``ids`` (its rows' ids), ``assignments`` (``(N_old, D)``
    topic id per row and depth) and ``topics`` (one row per topic: ``topic_id``, ``depth``,
    ``label``, ``parent_id``, ``size``)."""

    ids: np.ndarray
    assignments: np.ndarray
    topics: pd.DataFrame

    @classmethod
    def from_tables(cls, per_datum: pd.DataFrame, hierarchy: pd.DataFrame) -> PriorTopics:
        """From the published ``topics`` resource (``[id, topic_depth_1, ...]``, labels) and
        ``hierarchy`` resource (``topic_id, depth, label, parent_id, size``): labels are unique
        within a depth, so they name the topic ids."""
        depths = sorted(int(c.rsplit("_", 1)[1]) for c in per_datum.columns[1:])
        assignments = np.full((len(per_datum), len(depths)), -1, np.int64)
        for d in depths:
            at = hierarchy[hierarchy["depth"] == d]
            ids = pd.Series(at["topic_id"].to_numpy(np.int64), index=at["label"].to_numpy())
            found = ids.reindex(per_datum[f"topic_depth_{d}"].to_numpy())
            if found.isna().any():
                raise ValueError(f"previous topics: a depth-{d} label is not in the hierarchy")
            assignments[:, d - 1] = found.to_numpy(np.int64)
        return cls(per_datum.iloc[:, 0].astype(str).to_numpy(), assignments, hierarchy.copy())

    def aligned(self, ids: Sequence[str]) -> CarryOver:
        """This build's topics for the rows ``ids`` (``-1`` for rows it did not have)."""
        pos = positions(self.ids, ids)
        assignments = np.where(pos[:, None] >= 0, self.assignments[np.maximum(pos, 0)], -1)
        ids = self.topics["topic_id"].astype(int).tolist()

        def column(name: str, kind: type) -> dict:
            return dict(zip(ids, self.topics[name].astype(kind).tolist(), strict=True))

        return CarryOver(
            assignments=assignments.astype(np.int64),
            labels=column("label", str),
            sizes=column("size", int),
            depths=column("depth", int),
            next_id=int(self.topics["topic_id"].max()) + 1 if len(self.topics) else 0,
        )


@dataclass(frozen=True)
class CarryOver:
    """The previous topics aligned to the rows being built: ``assignments`` ``(N, D_old)`` with
    ``-1`` on new rows; every old topic's ``labels``, ``sizes`` (rows it had, removed rows
    included) and ``depths``; ``next_id``, the first id no old topic used."""

    assignments: np.ndarray
    labels: dict[int, str]
    sizes: dict[int, int]
    depths: dict[int, int]
    next_id: int

    def sizes_at(self, depth: int) -> dict[int, int]:
        """The sizes of the old topics of one depth."""
        return {t: s for t, s in self.sizes.items() if self.depths[t] == depth}

    @property
    def new_rows(self) -> int:
        return int((self.assignments[:, 0] < 0).sum()) if self.assignments.size else 0


def positions(old_ids: Sequence[str], ids: Sequence[str]) -> np.ndarray:
    """For each of ``ids``, its row in ``old_ids`` or ``-1`` (ids are unique in each)."""
    index = pd.Index(np.asarray(old_ids, dtype=object))
    return index.get_indexer(pd.Index(np.asarray(ids, dtype=object))).astype(np.int64)


def aligned_coords(
    old_ids: Sequence[str], old_coords: np.ndarray, ids: Sequence[str]
) -> np.ndarray:
    """``(N, 2)`` float32 previous coordinates of ``ids``, NaN for rows the old map lacked."""
    pos = positions(old_ids, ids)
    out = np.full((len(pos), 2), np.nan, np.float32)
    out[pos >= 0] = np.asarray(old_coords, np.float32)[pos[pos >= 0]]
    return out


@dataclass(frozen=True)
class Match:
    """New topics against old ones at one depth (see the module's docstring)."""

    kept: dict[int, int]  # new topic -> the old topic whose id and label it keeps
    sources: dict[int, list[int]]  # new topic -> old topics it draws from
    parts: dict[int, list[int]]  # old topic -> new topics that draw from it


def match_topics(new: np.ndarray, old: np.ndarray, old_sizes: dict[int, int]) -> Match:
    """Match the new topics ``new`` (``(N,)`` ids) to the old ones ``old`` (``(N,)``, ``-1`` on
    new rows); ``old_sizes`` counts every old topic of that depth's rows in its own build
    (removed ones too)."""
    common = old >= 0
    both = np.column_stack([new[common], old[common]])
    pairs, overlap = np.unique(both, axis=0, return_counts=True)
    new_ids, new_sizes = np.unique(new, return_counts=True)
    size_new = dict(zip(new_ids.tolist(), new_sizes.tolist(), strict=True))
    kept: dict[int, int] = {}
    sources: dict[int, list[int]] = {int(a): [] for a in new_ids}
    parts: dict[int, list[int]] = {int(b): [] for b in old_sizes}
    for (a, b), m in zip(pairs.tolist(), overlap.tolist(), strict=True):
        sa, sb = size_new[a], old_sizes.get(b, m)
        if 2 * m > sa and 2 * m > sb:
            kept[a] = b
        if m >= DRAW_SHARE * min(sa, sb):
            sources[a].append(b)
            parts.setdefault(b, []).append(a)
    return Match(kept, sources, parts)


def describe_changes(
    matches: Sequence[Match], new_labels: dict[int, str], old_labels: dict[int, str]
) -> dict[str, object]:
    """Per depth: counts of topics kept, split, merged, new and gone, and up to ``LISTED`` of
    each event by label (``"old -> new, new"``), for the run's metadata."""
    out: dict[str, object] = {}
    for depth, m in enumerate(matches, start=1):
        matched_old = set(m.kept.values())
        split = {b: ps for b, ps in m.parts.items() if len(ps) >= 2}
        merged = {a: ss for a, ss in m.sources.items() if len(ss) >= 2}
        new = [a for a, ss in m.sources.items() if a not in m.kept and not ss]
        gone = [b for b, ps in m.parts.items() if b not in matched_old and not ps]

        def names(ids, labels):
            return ", ".join(labels.get(i, str(i)) for i in ids)

        out[f"depth {depth}"] = {
            "kept": len(m.kept),
            "split": len(split),
            "merged": len(merged),
            "new": len(new),
            "gone": len(gone),
            "splits": [
                f"{old_labels.get(b, b)} -> {names(ps, new_labels)}"
                for b, ps in sorted(split.items())[:LISTED]
            ],
            "merges": [
                f"{names(ss, old_labels)} -> {new_labels.get(a, a)}"
                for a, ss in sorted(merged.items())[:LISTED]
            ],
            "new_topics": [new_labels.get(a, str(a)) for a in sorted(new)[:LISTED]],
            "gone_topics": [old_labels.get(b, str(b)) for b in sorted(gone)[:LISTED]],
        }
    return out


def kept_share(
    old_ids: Sequence[str],
    old_topics: np.ndarray,
    old_labels: Sequence[str],
    ids: Sequence[str],
    topics: np.ndarray,
    labels: Sequence[str],
) -> float:
    """Share of the old rows still present whose topic id and label are both unchanged."""
    pos = positions(ids, old_ids)
    here = pos >= 0
    if not here.any():
        return float("nan")
    same_id = np.asarray(topics)[pos[here]] == np.asarray(old_topics)[here]
    same_label = np.asarray(labels, dtype=object)[pos[here]] == np.asarray(old_labels, object)[here]
    return float((same_id & same_label).mean())


def movement(
    old_ids: Sequence[str], old_coords: np.ndarray, ids: Sequence[str], coords: np.ndarray
) -> float:
    """Median distance the old rows still present moved, as a fraction of the old map's width
    (its extent along x)."""
    old_coords = np.asarray(old_coords, np.float64)
    pos = positions(ids, old_ids)
    here = pos >= 0
    if not here.any() or len(old_coords) < 2:
        return float("nan")
    width = float(np.ptp(old_coords[:, 0])) or 1.0
    moved = np.linalg.norm(np.asarray(coords, np.float64)[pos[here]] - old_coords[here], axis=1)
    return float(np.median(moved) / width)


def carry_cluster_ids(
    old_ids: Sequence[str], old_clusters: np.ndarray, ids: Sequence[str], clusters: np.ndarray
) -> np.ndarray:
    """Duplicate cluster ids of a rebuild that keep the previous build's where a cluster holds
    most of an old cluster's rows (the old cluster it holds most of), others numbered above the
    old ones in order of their first row. A row that stays alone keeps its id; so does a
    cluster that new rows joined."""
    clusters = np.asarray(clusters, np.int64)
    old_clusters = np.asarray(old_clusters, np.int64)
    if len(old_clusters) == 0 or len(clusters) == 0:
        return clusters
    pos = positions(old_ids, ids)
    here = pos >= 0
    old_sizes = np.bincount(old_clusters)
    pairs, overlap = np.unique(
        np.column_stack([clusters[here], old_clusters[pos[here]]]), axis=0, return_counts=True
    )
    remap = np.full(int(clusters.max()) + 1, -1, np.int64)
    best = np.zeros(len(remap), np.int64)
    for (new, was), m in zip(pairs.tolist(), overlap.tolist(), strict=True):
        if 2 * m > old_sizes[was] and m > best[new]:  # most of ``was``: one new cluster at most
            remap[new], best[new] = was, m
    _, first = np.unique(clusters, return_index=True)
    rest = [c for c in clusters[np.sort(first)].tolist() if remap[c] < 0]
    remap[rest] = int(old_clusters.max()) + 1 + np.arange(len(rest))
    return remap[clusters]
