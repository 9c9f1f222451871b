"""Blocking checks: a resource that breaks an invariant stops its downstream assets."""

import dagster as dg
import numpy as np
import pyarrow as pa

from atlas_assets.defs.assets.common import dataset_version
from atlas_assets.defs.partitions import atlas_datasets
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.store import read_resource
from atlas_assets.store.datasets import index_config
from atlas_assets.store.resources import (
    CLUSTER_ID,
    DUPLICATE_CLASS,
    RETENTION,
    SINGLETON,
    read_latent,
    topic_column,
)

# Per-datum resources that must list exactly the dataset's ids, in its order.
ALIGNED = ("latent", "knn_graph", "projected", "topics", "duplicates", "tags")


def alignment_problem(dataset: pa.Table, resource: pa.Table) -> str | None:
    """Why ``resource`` is not row-aligned with ``dataset`` (None if it is)."""
    if resource.num_rows != dataset.num_rows:
        return f"{resource.num_rows} rows, but the dataset has {dataset.num_rows}"
    if resource.column_names[0] != dataset.column_names[0]:
        return f"first column {resource.column_names[0]!r} is not the id field"
    if not resource.column(0).equals(dataset.column(0)):
        return "ids are not those of the dataset, in its order"
    return None


def _skipped(paths, name: str) -> dg.AssetCheckResult | None:
    """A passing result when the map's configuration turned this optional resource off."""
    if name not in ("duplicates", "topics") or paths.resource(name).is_file():
        return None  # only these two can be turned off; the rest need no index configuration
    config = index_config(paths)
    enabled = {"duplicates": config.duplicates_enabled, "topics": config.topics_enabled}[name]
    if not enabled:
        return dg.AssetCheckResult(passed=True, metadata={"problem": "disabled for this map"})
    return None


def _aligned_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=name,
        name=f"{name}_aligned_with_dataset",
        blocking=True,
        partitions_def=atlas_datasets,
    )
    def check(context: dg.AssetCheckExecutionContext, store: AtlasStore) -> dg.AssetCheckResult:
        paths = store.paths(context.partition_key)
        version = dataset_version(paths)
        if skipped := _skipped(paths, name):
            return skipped
        problem = alignment_problem(
            read_resource(paths.resource("dataset"), expected_version=version),
            read_resource(paths.resource(name), expected_version=version),
        )
        return dg.AssetCheckResult(passed=problem is None, metadata={"problem": problem or "none"})

    check.__doc__ = f"Row i of {name!r} is datum i of the dataset, at the same version."
    return check


aligned_checks = [_aligned_check(name) for name in ALIGNED]


@dg.asset_check(asset="latent", blocking=True, partitions_def=atlas_datasets)
def latent_vectors_finite(
    context: dg.AssetCheckExecutionContext, store: AtlasStore
) -> dg.AssetCheckResult:
    """Every latent vector is finite and of unit length (one dimension for all)."""
    paths = store.paths(context.partition_key)
    vectors = read_latent(paths.resource("latent"))
    # A NaN or infinite entry makes its row's norm NaN or infinite; einsum needs no (N, d) copy.
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1) > 1e-3))
    return dg.AssetCheckResult(
        passed=bad.size == 0,
        metadata={"dimensions": int(vectors.shape[1]), "bad_rows": bad[:20].tolist()},
    )


def duplicate_class_problem(classes: np.ndarray, clusters: np.ndarray) -> str | None:
    """Why duplicate classes break their invariants (None if they hold): exactly one retention
    candidate per cluster of two or more, singletons alone in their cluster."""
    sizes = np.bincount(clusters)
    if (classes == SINGLETON).any() and (sizes[clusters[classes == SINGLETON]] != 1).any():
        return "a singleton shares its cluster"
    multi = sizes[clusters] > 1
    if (classes[~multi] != SINGLETON).any():
        return "a datum alone in its cluster is not a singleton"
    keepers = np.bincount(clusters[classes == RETENTION], minlength=len(sizes))
    if (keepers[np.unique(clusters[multi])] != 1).any():
        return "a cluster has no retention candidate or more than one"
    return None


@dg.asset_check(asset="duplicates", blocking=True, partitions_def=atlas_datasets)
def duplicate_classes_consistent(
    context: dg.AssetCheckExecutionContext, store: AtlasStore
) -> dg.AssetCheckResult:
    """Each cluster of two or more has exactly one retention candidate; singletons are alone."""
    paths = store.paths(context.partition_key)
    if skipped := _skipped(paths, "duplicates"):
        return skipped
    table = read_resource(paths.resource("duplicates"))
    problem = duplicate_class_problem(
        table.column(DUPLICATE_CLASS).to_numpy(zero_copy_only=False).astype(str),
        table.column(CLUSTER_ID).to_numpy(),
    )
    return dg.AssetCheckResult(passed=problem is None, metadata={"problem": problem or "none"})


@dg.asset_check(asset="topics", blocking=True, partitions_def=atlas_datasets)
def every_datum_has_a_topic(
    context: dg.AssetCheckExecutionContext, store: AtlasStore
) -> dg.AssetCheckResult:
    """Every datum has a depth-1 topic (noise is assigned, never dropped)."""
    paths = store.paths(context.partition_key)
    if skipped := _skipped(paths, "topics"):
        return skipped
    missing = read_resource(paths.resource("topics")).column(topic_column(1)).null_count
    return dg.AssetCheckResult(passed=missing == 0, metadata={"missing": int(missing)})


@dg.asset_check(asset="tags", partitions_def=atlas_datasets)
def tags_refer_to_existing_ids(
    context: dg.AssetCheckExecutionContext, store: AtlasStore
) -> dg.AssetCheckResult:
    """Warns when the tag store holds ids that are not in the dataset (e.g. after a rebuild
    from a smaller source); the map shows only tags of its own datums."""
    from atlas_assets.store.tags import tag_store as open_tags

    paths = store.paths(context.partition_key)
    tag_store = open_tags(paths)
    if not tag_store.exists():
        return dg.AssetCheckResult(passed=True, metadata={"unknown_ids": 0})
    known = set(read_resource(paths.resource("dataset")).column(0).to_pylist())
    unknown = {
        name: sorted(set(tag_store.get_datums_in_tag(name)) - known) for name in tag_store.counts()
    }
    unknown = {name: ids for name, ids in unknown.items() if ids}
    return dg.AssetCheckResult(
        passed=not unknown,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "unknown_ids": sum(len(v) for v in unknown.values()),
            "examples": dg.MetadataValue.json({k: v[:5] for k, v in unknown.items()}),
        },
    )
