import dagster as dg

from atlas_assets.defs.partitions import atlas_datasets

# Every map resource of one dataset: what `create_index`, `atlas index` and the UI's
# "Materialize all" build.
build_map = dg.define_asset_job(
    "build_map",
    selection=dg.AssetSelection.all(),
    partitions_def=atlas_datasets,
    description="Build (or rebuild) every map resource of one dataset partition.",
)
