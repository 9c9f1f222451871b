"""Materialize a dataset's map through Dagster, recorded in the persistent instance.

The run is a real Dagster run of the ``build_map`` job: it appears in the UI (``dg dev``) with
its logs, metadata and lineage, exactly like a run launched there.
"""

from __future__ import annotations

import os

from atlas_assets.store import DatasetPaths
from atlas_assets.store.layout import check_dagster_pg_url, dagster_home, ensure_dagster_home
from atlas_assets.store.publish import discard
from atlas_assets.store.tags import check_tags_setting


def _root_message(error) -> str:
    """The innermost error message of a Dagster step failure (the user's own exception)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def check_build_settings() -> None:
    """The database settings every build needs, checked (form, then a connection) without
    writing anything: the live tag store (``ATLAS_TAGS_URL``) and the Dagster instance
    (``ATLAS_DAGSTER_PG_URL``). One error names the setting that is wrong."""
    check_tags_setting()
    check_dagster_pg_url()


def materialize_map(paths: DatasetPaths, *, fresh: bool = False) -> str:
    """Build every map resource of ``paths``'s partition and publish the map; returns the
    Dagster run id. Until the run has succeeded, readers keep the previous map. A rebuild
    keeps the previous map's layout and topics; ``fresh`` (the run's ``atlas/fresh`` tag)
    builds from scratch instead."""
    check_tags_setting()  # the tags step and publishing need it: said before building
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home())
    import dagster as dg  # imported here: reading a map never needs Dagster
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    from atlas_assets.definitions import defs
    from atlas_assets.defs.partitions import atlas_datasets
    from atlas_assets.defs.publishing import (
        fail_dead_runs,
        process_tags,
        publish,
        publish_finished,
    )
    from atlas_assets.defs.refresh import FRESH_TAG

    with dg.DagsterInstance.get() as instance:
        fail_dead_runs(instance)  # killed builds: failed, their builds discarded just below
        publish_finished(instance, [paths])
        key = paths.partition_key
        if not instance.has_dynamic_partition(atlas_datasets.name, key):
            instance.add_dynamic_partitions(atlas_datasets.name, [key])
        # Loading definitions reads the current instance's defs-state storage from a context
        # variable, which Dagster sets on entering an instance. Once, in CI, the variable held a
        # collected instance's storage by this point (a third build in one test), so it is set
        # again here: the load always sees this live instance.
        with set_defs_state_storage(instance.defs_state_storage):
            job = defs().resolve_job_def("build_map")
        result = job.execute_in_process(
            instance=instance,
            partition_key=key,
            raise_on_error=False,
            tags={**process_tags(), **({FRESH_TAG: "true"} if fresh else {})},
            # Step progress at INFO; Dagster's DEBUG events stay in the run's log in the UI.
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        if not result.success:
            discard(paths, result.run_id)
            failure = next((e for e in result.all_events if e.is_step_failure), None)
            why = _root_message(failure.step_failure_data.error) if failure else "see the run"
            raise RuntimeError(
                f"building the map of {paths.identifier!r} failed (Dagster run {result.run_id}): "
                f"{why}"
            )
        publish(paths, result.run_id)
        return result.run_id


def forget_partition(paths: DatasetPaths) -> bool:
    """Remove the dataset's partition from the Dagster instance, if there is an instance and it
    has that partition (the runs stay in its history); returns whether one was removed."""
    if not (dagster_home() / "dagster.yaml").is_file():
        return False  # no instance yet: nothing to forget, and none is created for this
    # Its configuration follows ATLAS_DAGSTER_PG_URL, checked: a clear error, not Dagster's.
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home())
    import dagster as dg

    from atlas_assets.defs.partitions import atlas_datasets

    with dg.DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(atlas_datasets.name, paths.partition_key):
            return False
        instance.delete_dynamic_partition(atlas_datasets.name, paths.partition_key)
        return True
