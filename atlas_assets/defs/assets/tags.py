import dagster as dg
import pyarrow as pa

from atlas_assets.defs.assets.common import ASSET_DEFAULTS, Build, data_version
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.store import write_resource
from atlas_assets.store.tags import tag_store


# After duplicates: the tag derived from them is set when a map is published
# (defs/publishing.py), so this snapshot holds the one of the map published before this build.
@dg.asset(
    deps=["dataset", "duplicates"],
    kinds={"python", "sqlite", "arrow"},
    code_version="tags-v1",
    **ASSET_DEFAULTS,
)
def tags(context: dg.AssetExecutionContext, store: AtlasStore) -> dg.MaterializeResult:
    """A snapshot of the live tag store: ``[id, <one bool column per tag>]`` in dataset order.

    Tags are kept by datum id in the dataset's live store (SQLite beside the data, or the
    PostgreSQL database of ``ATLAS_TAGS_URL``; shared with Python and the map explorer), so
    they survive re-indexing; this asset records their counts over time and lets downstream
    assets depend on them.
    """
    build = Build.start(context, store)
    paths = build.paths
    data = build.read("dataset")
    ids = data.column(0)
    live = tag_store(paths)
    members = live.memberships(ids.to_pylist()) if live.exists() else {}
    table = pa.table(
        {data.column_names[0]: ids, **{name: pa.array(mask) for name, mask in members.items()}}
    )
    counts = {name: int(mask.sum()) for name, mask in members.items()}
    params = {"tags": counts}
    write_resource(build.output("tags"), table, resource="tags", **build.lineage(params))
    # The counts are metadata of their own, not "parameters"; they still make the data version.
    return build.result(
        table,
        metadata={"tag_counts": dg.MetadataValue.json(counts), "tags": len(counts)},
        version=data_version(build.version, params),
    )
