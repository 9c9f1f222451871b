"""Runs not started by create_index (the UI, the inbox, the schedule) publish their map through
the publish_maps sensor: a succeeded run's build once the run is over, a failed run's never."""

from __future__ import annotations

import os
import socket

import dagster as dg

from atlas_assets.definitions import defs
from atlas_assets.defs.partitions import atlas_datasets
from atlas_assets.defs.publishing import _run_pid, fail_dead_runs, process_tags, publish_maps
from atlas_assets.defs.resources import HOST_TAG, PID_TAG, AtlasStore
from atlas_assets.store import dataset_paths, published, resource_info
from atlas_assets.store.datasets import update_meta
from atlas_assets.store.layout import ensure_dagster_home
from atlas_assets_tests.defs.test_assets import byo_dataset, names

PIPELINE = {"dataset", "latent", "knn_graph", "projected"}


def ui_run(instance: dg.DagsterInstance, selection: set[str], **kwargs):
    """What materializing ``selection`` of partition ``ui`` from the Dagster UI runs."""
    loaded = defs()
    return dg.materialize(
        [a for a in loaded.assets if names(a) & selection],
        instance=instance,
        partition_key="ui",
        resources=loaded.resources,
        **kwargs,
    )


def tick(instance: dg.DagsterInstance) -> str:
    context = dg.build_sensor_context(instance=instance, resources={"store": AtlasStore()})
    return publish_maps(context).skip_message


def seed(paths) -> int:
    return resource_info(paths.resource("projected"))["params"]["seed"]


def test_a_ui_run_is_published_by_the_next_tick_a_failed_one_never(store, arxiv, monkeypatch):
    ds = byo_dataset("ui", arxiv.head(40), 16)
    paths = dataset_paths("ui")
    config = ds._refresh()["maps"][0]
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(atlas_datasets.name, ["ui"])
        first = ui_run(instance, PIPELINE)
        assert first.success and published(paths).resources == {}  # not yet
        # The run says where its process lives: the host from the store resource, the pid
        # from Dagster's own log, so a run launched by the daemon can be told dead too.
        run = instance.get_run_by_id(first.run_id)
        assert run.tags[HOST_TAG] == socket.gethostname() and PID_TAG not in run.tags
        assert _run_pid(instance, run) == os.getpid()
        assert "published: 1" in tick(instance)
        assert set(published(paths).resources) == PIPELINE and seed(paths) == 0
        first_files = dict(published(paths).resources)

        # Only `projected`, with a new seed: published over the map it was built from.
        update_meta(paths, maps=[{**config, "projection": {"seed": 5}}])
        again = ui_run(instance, {"projected"})
        assert again.success and seed(paths) == 0
        tick(instance)
        assert seed(paths) == 5
        current = published(paths).resources
        assert {k: v for k, v in current.items() if k != "projected"} == {
            k: v for k, v in first_files.items() if k != "projected"
        }

        # A failed run: its files are discarded, the map stays as it was.
        def broken(*args, **kwargs):
            raise RuntimeError("projection crashed")

        monkeypatch.setattr("atlas_assets.lib.project.project", broken)
        update_meta(paths, maps=[{**config, "projection": {"seed": 6}}])
        failed = ui_run(instance, {"projected", "latent"}, raise_on_error=False)
        assert not failed.success
        assert "discarded: 1" in tick(instance)
        assert published(paths).resources == current and seed(paths) == 5
        # Removed after the grace period (a re-execution from failure may still read it).
        assert f"builds/{failed.run_id}" in published(paths).retired


def test_a_live_run_is_left_alone(store):
    """The tick fails only runs whose process is gone: a run checking itself is alive."""
    seen = []

    @dg.op
    def look(context) -> None:
        seen.extend(fail_dead_runs(context.instance))

    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        result = (
            dg.GraphDefinition("live", node_defs=[look])
            .to_job()
            .execute_in_process(instance=instance, tags=process_tags())
        )
    assert result.success and seen == []
