import dagster as dg
import pyarrow.compute as pc

from atlas_assets.defs.assets.common import ASSET_DEFAULTS, Build
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.lib.diff import id_changes
from atlas_assets.store import write_resource
from atlas_assets.store.datasets import load_meta, read_shards, snapshot


@dg.asset(kinds={"python", "arrow"}, code_version="dataset-v1", **ASSET_DEFAULTS)
def dataset(context: dg.AssetExecutionContext, store: AtlasStore) -> dg.MaterializeResult:
    """The uploaded rows: every source shard, validated, in upload order, id field first.

    Its data version is the content hash of the shards, so an unchanged dataset leaves every
    downstream resource in sync.
    """
    paths = store.paths(context.partition_key)
    meta = load_meta(paths)
    names, version = snapshot(paths)
    build = Build(paths, version)
    if meta is None or not names:
        raise dg.Failure(f"dataset {paths.identifier!r} has no data: run `atlas add` first")
    table = read_shards(paths, names=names)
    id_field = meta["id_field"]
    ids = table.column(id_field)
    if ids.null_count or len(pc.unique(ids)) != table.num_rows:
        raise dg.Failure(f"dataset {paths.identifier!r}: ids in {id_field!r} are null or repeat")
    columns = [id_field] + [
        c for c in table.column_names if c != id_field and not c.startswith("_")
    ]
    table = table.select(columns)
    params = {"shards": names, "id_field": id_field}
    before = build.previous("dataset")
    changes = id_changes(
        before.column(0).to_pylist() if before is not None else None,
        table.column(id_field).to_pylist(),
    )
    write_resource(build.output("dataset"), table, resource="dataset", **build.lineage(params))
    context.log.info(f"{paths.identifier}: {table.num_rows} rows from {len(names)} shards")
    return build.result(
        table,
        metadata={
            "dataset_version": version,
            "shards": len(names),
            "rows_added": changes["added"],
            "rows_removed": changes["removed"],
        },
        version=dg.DataVersion(version),
    )
