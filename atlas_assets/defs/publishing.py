"""Finished runs publish their maps; runs whose process died are marked failed.

A run writes its build of a map beside the published one (``store/publish.py``). This is the
Dagster side: a build whose run succeeded is committed (published whole), one whose run failed
is discarded, and a run whose process was killed (``kill -9``, a power cut) is marked failed, so
it neither stays STARTED forever nor counts against the run queue's limit. ``create_index`` does
all this itself, synchronously; the ``publish_maps`` sensor does it for every other run (the UI,
the inbox sensor, the refresh schedule, ``dg launch``) within seconds of the run's end.

Dagster's own run monitoring cannot tell that such a run died: the default run launcher has no
worker health check, and ``execute_in_process`` runs have no launcher at all.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

from atlas_assets.defs.resources import HOST_TAG, PID_TAG, AtlasStore
from atlas_assets.lib.duplicates import tag_deletion_candidates
from atlas_assets.options import IndexConfig
from atlas_assets.store import (
    DatasetPaths,
    PublishedMap,
    SupersededError,
    commit,
    list_datasets,
    read_resource,
)
from atlas_assets.store.publish import discard, pending_builds, process_alive
from atlas_assets.store.resources import deletion_candidates
from atlas_assets.store.tags import tag_store

_LIVE = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def process_tags() -> dict[str, str]:
    """Run tags naming this process, for runs it executes itself (``execute_in_process``)."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _run_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    if PID_TAG in run.tags:
        return int(run.tags[PID_TAG])
    # Dagster logs the pid of the process that executes a run ("Started process for run").
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = record.dagster_event.engine_event_data if record.dagster_event else None
        pid = data.metadata.get("pid") if data and data.metadata else None
        if pid is not None:
            return int(pid.value)
    return None


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every unfinished run whose process on this machine is gone; returns their
    ids. Runs on other machines and runs not known to be ours are left alone."""
    failed = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=_LIVE)):
        run = record.dagster_run
        if HOST_TAG not in run.tags:
            continue
        alive = process_alive(run.tags[HOST_TAG], _run_pid(instance, run), record.start_time)
        if alive is False:
            instance.report_run_failed(
                run, "the run's process died (killed or the machine stopped); marked failed"
            )
            failed.append(run.run_id)
    return failed


def publish(paths: DatasetPaths, build: str) -> PublishedMap:
    """Publish what run ``build`` wrote (:func:`atlas_assets.store.commit`), then bring the tag
    derived from the map up to date. Only a published map sets it, so a build that fails or is
    killed never leaves its duplicates in the live tag store."""
    current = commit(paths, build)
    tag_published_duplicates(paths, current)
    return current


def tag_published_duplicates(paths: DatasetPaths, current: PublishedMap) -> None:
    """Make the derived tag hold the published map's deletion candidates (``tag_duplicates``)."""
    options = IndexConfig(current.config or {}).duplicate_detection
    if options is None or "duplicates" not in current.resources or not options.tag_duplicates:
        return
    table = read_resource(current.path("duplicates"))
    tag_deletion_candidates(tag_store(paths), deletion_candidates(table))


def publish_finished(instance: dg.DagsterInstance, datasets: list[DatasetPaths]) -> dict:
    """Commit the builds of succeeded runs, discard those of failed ones; returns what was done
    (``{"published": [...], "discarded": [...], "superseded": [...]}``, as ``dataset:run``)."""
    done: dict[str, list[str]] = {"published": [], "discarded": [], "superseded": []}
    for paths in datasets:
        for build in pending_builds(paths):
            run = instance.get_run_by_id(build)
            label = f"{paths.identifier}:{build}"
            if run is None:
                continue  # another instance's run (tests); the store removes it when abandoned
            if run.status == dg.DagsterRunStatus.SUCCESS:
                try:
                    publish(paths, build)
                    done["published"].append(label)
                except SupersededError:
                    done["superseded"].append(label)
            elif run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                discard(paths, build)
                done["discarded"].append(label)
    return done


def finish_runs(instance: dg.DagsterInstance, home: Path) -> dict:
    """Fail dead runs, then publish or discard the builds of finished runs, in one pass."""
    dead = fail_dead_runs(instance)
    return {"failed_dead": dead, **publish_finished(instance, list_datasets(home))}


@dg.sensor(
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publishes the map of each finished run and marks runs whose process died failed.",
)
def publish_maps(context: dg.SensorEvaluationContext, store: AtlasStore) -> dg.SkipReason:
    """Every tick: dead runs failed (freeing the run queue), finished builds published."""
    done = finish_runs(context.instance, store.home())
    for key, items in done.items():
        if items:
            context.log.info(f"{key}: {', '.join(items)}")
    summary = "; ".join(f"{k}: {len(v)}" for k, v in done.items() if v)
    return dg.SkipReason(summary or "nothing to publish")
