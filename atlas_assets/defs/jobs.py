import dagster as dg

from atlas_assets.defs.partitions import atlas_datasets

# Every map resource of one dataset: what `create_index`, `atlas index`, the inbox sensor and
# the refresh schedule build. In one process: the stages run one after another anyway, and a
# subprocess per step (19 with the checks) costs more than it saves on a small machine.
build_map = dg.define_asset_job(
    "build_map",
    selection=dg.AssetSelection.all(),
    partitions_def=atlas_datasets,
    description="Build (or rebuild) every map resource of one dataset partition.",
    executor_def=dg.in_process_executor,
)
