"""What a rebuild reads back from the previous build, so the map its users learnt stays put.

Inside a run, ``paths.resource(name)`` gives the published map's file until the run writes its
own, so the ``projected`` and ``topics`` assets read the previous build here before writing. The
previous build is not used when the run carries the ``atlas/fresh`` tag (``atlas index --fresh``,
``create_index(fresh=True)``, or the tag added in the Dagster UI's launchpad: a rebuild from
scratch, this once), when there is none, or when it was built with other parameters. The pure
parts are in :mod:`atlas_assets.lib.refresh`.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa

from atlas_assets.lib.refresh import (
    CarryOver,
    PriorTopics,
    aligned_coords,
    carry_cluster_ids,
    movement,
)
from atlas_assets.store import DatasetPaths, read_resource, resource_info

FRESH_TAG = "atlas/fresh"
# The schema-metadata key (read back by resource_info as "refresh") holding what a refresh did.
REFRESH_KEY = b"atlas:refresh"


def fresh_requested(context: dg.AssetExecutionContext) -> bool:
    """Whether this run rebuilds from scratch (its ``atlas/fresh`` tag is set and not false)."""
    value = context.run.tags.get(FRESH_TAG)
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def _previous(paths: DatasetPaths, name: str, params: dict[str, Any]) -> pa.Table | None:
    """The published ``name`` if it was built with ``params`` (those given; others may
    differ), else None."""
    path = paths.resource(name)
    info = resource_info(path)
    wanted = json.loads(json.dumps(params, default=str))
    if info is None or any(info.get("params", {}).get(k) != v for k, v in wanted.items()):
        return None
    return read_resource(path)


def previous_coords(
    paths: DatasetPaths, ids: list[str], params: dict[str, Any]
) -> tuple[np.ndarray | None, pa.Table | None]:
    """The previous map's coordinates aligned to ``ids`` (NaN on new rows) and its table, or
    ``(None, None)`` when there is no compatible previous map."""
    table = _previous(paths, "projected", params)
    if table is None:
        return None, None
    coords = np.column_stack([table.column("x").to_numpy(), table.column("y").to_numpy()])
    return aligned_coords(table.column(0).to_pylist(), coords, ids), table


def previous_topics(
    paths: DatasetPaths, ids: list[str], params: dict[str, Any]
) -> CarryOver | None:
    """The previous build's topics aligned to ``ids``, or None when there are none built with
    ``params`` (or their hierarchy is missing)."""
    per_datum = _previous(paths, "topics", params)
    hierarchy = paths.resource("hierarchy")
    if per_datum is None or not hierarchy.is_file():
        return None
    try:
        tables = per_datum.to_pandas(), read_resource(hierarchy).to_pandas()
        return PriorTopics.from_tables(*tables).aligned(ids)
    except (ValueError, KeyError):  # not a tree this version wrote: start from scratch
        return None


def with_refresh(table: pa.Table, summary: dict[str, Any]) -> pa.Table:
    """``table`` with what the refresh did in its schema metadata (``atlas ls`` shows it)."""
    meta = dict(table.schema.metadata or {})
    meta[REFRESH_KEY] = json.dumps(summary, sort_keys=True).encode()
    return table.replace_schema_metadata(meta)


def map_movement(before: pa.Table | None, ids: list[str], coords: np.ndarray) -> dict[str, Any]:
    """What a rebuild did to the map: whether it started from the previous one, and the median
    movement of the old points still present, as a fraction of the old map's width."""
    if before is None:
        return {"start": "from scratch"}
    old = np.column_stack([before.column("x").to_numpy(), before.column("y").to_numpy()])
    moved = movement(before.column(0).to_pylist(), old, ids, coords)
    return {"start": "previous map", "median_movement": round(moved, 6)}


def carried_clusters(paths: DatasetPaths, ids: list[str], clusters: np.ndarray) -> np.ndarray:
    """Duplicate cluster ids that keep the published build's for unchanged clusters."""
    path = paths.resource("duplicates")
    if not path.is_file():
        return clusters
    before = read_resource(path)
    old = before.column("cluster_id").to_numpy()
    return carry_cluster_ids(before.column(0).to_pylist(), old, ids, clusters)
