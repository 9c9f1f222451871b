"""Blocking checks: a resource that breaks an invariant stops its downstream assets."""

import dagster as dg
import numpy as np
import pyarrow as pa

from atlas_assets.defs.assets.common import dataset_version
from atlas_assets.defs.partitions import atlas_datasets
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.store import read_resource
from atlas_assets.store.files import matrix

# Per-datum resources that must list exactly the dataset's ids, in its order.
ALIGNED = ("latent", "knn_graph", "projected", "tags")


def alignment_problem(dataset: pa.Table, resource: pa.Table) -> str | None:
    """Why ``resource`` is not row-aligned with ``dataset`` (None if it is)."""
    if resource.num_rows != dataset.num_rows:
        return f"{resource.num_rows} rows, but the dataset has {dataset.num_rows}"
    if resource.column_names[0] != dataset.column_names[0]:
        return f"first column {resource.column_names[0]!r} is not the id field"
    if not resource.column(0).equals(dataset.column(0)):
        return "ids are not those of the dataset, in its order"
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
    vectors = matrix(read_resource(paths.resource("latent")).column("embedding"))
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], vectors, 0), axis=1)
    bad = np.flatnonzero(~finite | (np.abs(norms - 1) > 1e-3))
    return dg.AssetCheckResult(
        passed=bad.size == 0,
        metadata={"dimensions": int(vectors.shape[1]), "bad_rows": bad[:20].tolist()},
    )
