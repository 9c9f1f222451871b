import dagster as dg

from atlas_assets.defs.jobs import build_map
from atlas_assets.defs.partitions import atlas_datasets
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.inbox import refresh_source
from atlas_assets.store import list_datasets


@dg.schedule(
    cron_schedule="0 * * * *",
    job=build_map,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: re-read the sources datasets are bound to; rebuild maps that grew.",
)
def refresh_sources(context: dg.ScheduleEvaluationContext, store: AtlasStore):
    """Append new rows from each bound source and request a build only where data changed, so
    an unchanged dataset costs nothing and its map stays in sync."""
    requests = []
    for paths in list_datasets(store.home()):
        result = refresh_source(paths.identifier, store.home())
        if result is None:
            continue
        if result.error:
            context.log.error(f"{result.dataset}: source not read: {result.error}")
        elif result.rows:
            context.log.info(f"{result.dataset}: {result.rows} new rows from {result.file}")
            if not context.instance.has_dynamic_partition(atlas_datasets.name, result.dataset):
                context.instance.add_dynamic_partitions(atlas_datasets.name, [result.dataset])
            requests.append(dg.RunRequest(partition_key=result.dataset))
    return requests or dg.SkipReason("no bound source has new rows")
