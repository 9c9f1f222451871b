import dagster as dg

from atlas_assets.defs.jobs import build_map
from atlas_assets.defs.partitions import atlas_datasets
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.inbox import scan_inbox


@dg.sensor(
    job=build_map,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Ingests files dropped into $ATLAS_HOME/inbox/<dataset>/ and builds their maps.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, store: AtlasStore) -> dg.SensorResult:
    """Add each inbox folder's dataset as a partition and request its map build, in one tick."""
    results = scan_inbox(store.home())
    for r in results:
        if r.error:
            context.log.error(f"inbox: {r.file} not ingested: {r.error}")
        elif r.note:
            context.log.info(f"inbox: {r.file} for {r.dataset}: {r.note}")
        else:
            context.log.info(f"inbox: {r.file} added {r.rows} rows to {r.dataset}")
    keys = sorted({r.dataset for r in results if r.error is None})
    known = set(atlas_datasets.get_partition_keys(dynamic_partitions_store=context.instance))
    new = [k for k in keys if k not in known]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=None) for k in keys],
        dynamic_partitions_requests=[atlas_datasets.build_add_request(new)] if new else [],
        skip_reason=None if keys else "no new files in the inbox",
    )
