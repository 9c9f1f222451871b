"""The ``latent`` asset on a real Dask cluster (two worker processes on loopback): the map equals
the in-process one, a worker killed mid-run loses nothing, and paths that need no model ignore
the scheduler address."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import dagster as dg
import numpy as np

from atlas_assets import AtlasDataset
from atlas_assets.definitions import defs
from atlas_assets.defs.partitions import atlas_datasets
from atlas_assets.defs.publishing import publish
from atlas_assets.defs.resources import DaskCluster
from atlas_assets.lib.embed import embed_texts, model_key, text_hashes
from atlas_assets.store import dataset_paths, resource_info
from atlas_assets.store.files import read_arrow
from atlas_assets.store.layout import embedding_cache_dir
from atlas_assets_tests.conftest import SAMPLE
from atlas_assets_tests.defs.test_assets import byo_dataset, step_failure

UNREACHABLE = "tcp://127.0.0.1:9"  # the discard port: nothing listens there


def build(partition: str, assets: set[str] | None = None, dask: DaskCluster | None = None):
    """A real Dagster run of ``assets`` (default: the whole map) of one partition, with the
    project's definitions and resources, the ``dask`` resource replaced when given; returns
    the result and the run's log messages."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(atlas_datasets.name, [partition])
    loaded = defs()
    selected = [
        a for a in loaded.assets if assets is None or {k.to_user_string() for k in a.keys} & assets
    ]
    resources = {**loaded.resources, **({"dask": dask} if dask else {})}
    result = dg.materialize(
        selected,
        instance=instance,
        partition_key=partition,
        resources=resources,
        raise_on_error=False,
    )
    if result.success:  # what create_index and the publish_maps sensor do after a run
        publish(dataset_paths(partition), result.run_id)
    return result, [e.user_message for e in instance.all_logs(result.run_id)]


def latent_metadata(result) -> dict:
    event = next(
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.to_user_string() == "latent"
    )
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_map_built_on_the_cluster_equals_the_in_process_map(
    built, dask_cluster, store, monkeypatch
):
    """The shared in-process map, rebuilt with the scheduler's address in ATLAS_DASK_ADDRESS:
    the same vectors, positions and topics."""
    _, reference, frame = built
    monkeypatch.setenv("ATLAS_DASK_ADDRESS", dask_cluster.scheduler_address)
    ds = AtlasDataset("arXiv Sample", unique_id_field="arxiv_id")
    ds.add_data(frame.head(50))
    ds.add_data(frame.iloc[50:])
    ds.configure_index(indexed_field="abstract")
    result, log = build(ds._paths.partition_key, dask=DaskCluster(shard_size=32))
    assert result.success
    meta = latent_metadata(result)
    assert meta["dask_scheduler"] == dask_cluster.scheduler_address
    assert meta["dask_shards"] == 3 and meta["embedded_now"] == 90
    assert meta["dask_dashboard"].startswith("http://127.0.0.1:")
    progress = [m for m in log if m.startswith("embedded shard")]
    assert progress[0].startswith("embedded shard 1/3 on the cluster: ")
    assert progress[-1].startswith("embedded shard 3/3 on the cluster: 90/90 texts, ")
    assert progress[-1].endswith(" texts/s")

    atlas_map = ds.maps[0]
    latent, expected = atlas_map.embeddings.latent, reference.embeddings.latent
    assert latent.shape == expected.shape == (90, 384)
    assert np.einsum("ij,ij->i", latent, expected).min() >= 0.9999995  # min cosine 1.000000
    np.testing.assert_allclose(latent, expected, atol=1e-6)
    ours, theirs = atlas_map.embeddings.projected, reference.embeddings.projected
    assert ours["arxiv_id"].tolist() == frame["arxiv_id"].tolist()
    np.testing.assert_allclose(ours[["x", "y"]], theirs[["x", "y"]], atol=1e-4)
    assert atlas_map.topics.df.equals(reference.topics.df)


class MidRun(threading.Thread):
    """Watches the scheduler and, once one of the run's shards has finished while another runs
    (mid-run, the model loaded), calls ``act(worker address, worker pid)`` once; records
    ``(pid, the running shard's key)`` in ``acted``."""

    def __init__(self, address: str, act) -> None:
        super().__init__(daemon=True)
        from distributed import Client

        self.client = Client(address, set_as_default=False)
        self.pids = self.client.run(os.getpid)  # worker address -> pid
        self.act = act
        self.acted: tuple[int, str] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        seen: set[str] = set()
        while not self.stop.is_set() and self.acted is None:
            running = {
                worker: [str(k) for k in keys if str(k).startswith("atlas-embed-")]
                for worker, keys in self.client.processing().items()
            }
            now = {k for keys in running.values() for k in keys}
            finished = seen - now
            seen |= now
            for worker, ours in running.items():
                if ours and finished and worker in self.pids:
                    self.act(worker, self.pids[worker])
                    self.acted = (self.pids[worker], ours[0])
                    break
            time.sleep(0.05)

    def __enter__(self) -> MidRun:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()

    def transitions(self, prefix: str) -> list[tuple[str, str]]:
        """``(key, new state)`` of every task whose key starts with ``prefix``, in order, from
        the scheduler's transition log."""

        def log(dask_scheduler, prefix=prefix):
            return [
                (str(k), finish)
                for k, _, finish, *_ in dask_scheduler.transition_log
                if str(k).startswith(prefix)
            ]

        return self.client.run_on_scheduler(log)


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(dask_cluster, store, arxiv):
    frame = arxiv.head(32)
    texts = frame["abstract"].tolist()
    ds = AtlasDataset("killed", unique_id_field="arxiv_id")
    ds.add_data(frame)
    ds.configure_index(
        indexed_field="abstract",
        embedding_model={"batch_size": 4},
        topic_model=False,
        duplicate_detection=False,
    )
    kill = lambda worker, pid: os.kill(pid, signal.SIGKILL)  # noqa: E731
    with MidRun(dask_cluster.scheduler_address, kill) as killer:
        result, log = build(
            "killed",
            {"dataset", "latent"},
            dask=DaskCluster(address=dask_cluster.scheduler_address, shard_size=4),
        )
    assert killer.acted is not None, "no worker was killed while the run embedded"
    pid, key = killer.acted
    assert result.success, step_failure(result)
    assert pid not in killer.client.run(os.getpid).values()  # that process is gone
    meta = latent_metadata(result)
    assert meta["dask_shards"] == 8 and meta["embedded_now"] == 32

    sent = [k for k, state in killer.transitions(key) if k == key and state == "processing"]
    assert len(sent) >= 2  # the killed shard ran again, on a live worker
    assert any("embedded shard 8/8 on the cluster: 32/32 texts" in m for m in log)
    killer.client.close()

    # every row has its own vector, once, in upload order
    vectors = ds.maps[0].embeddings.latent
    expected = embed_texts(texts, batch_size=4)
    assert vectors.shape == (32, 384)
    assert np.einsum("ij,ij->i", vectors, expected).min() >= 0.9999995
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    # one cache file of the 32 distinct texts: no shard stored twice
    (cache,) = embedding_cache_dir(model_key(), store).glob("*.arrow")
    hashes = read_arrow(cache).column("hash").to_pylist()
    assert sorted(hashes) == sorted(set(text_hashes(texts)))


def test_an_interrupted_run_cancels_its_shards(dask_cluster, store, arxiv):
    """A run cancelled from the UI interrupts its step as SIGINT does here: the run stops, the
    scheduler drops the run's tasks at once, and the shards not yet sent are never sent."""
    frame = arxiv.head(24)
    ds = AtlasDataset("cancelled", unique_id_field="arxiv_id")
    ds.add_data(frame)
    ds.configure_index(
        indexed_field="abstract",
        embedding_model={"batch_size": 2},
        topic_model=False,
        duplicate_detection=False,
    )
    # Dagster turns SIGINT into an interrupt of the step while it runs; this handler takes
    # the signal should it land after the run (then the test fails below, not the session).
    late: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda *_: late.append(1))
    interrupt = lambda worker, pid: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
    try:
        with MidRun(dask_cluster.scheduler_address, interrupt) as watcher:
            result, log = build(
                "cancelled",
                {"dataset", "latent"},
                dask=DaskCluster(address=dask_cluster.scheduler_address, shard_size=2),
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert watcher.acted is not None and not late
    assert not result.success and "interrupted" in step_failure(result).lower()
    assert resource_info(dataset_paths("cancelled").resource("latent")) is None

    prefix = watcher.acted[1].rsplit("-", 1)[0]  # the run's shard keys: <prefix>-<shard>
    ever_sent = {k for k, state in watcher.transitions(prefix) if state == "processing"}
    assert 0 < len(ever_sent) < 12  # 12 shards in all: the rest were never sent

    def left(dask_scheduler, prefix=prefix):
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith(prefix)]

    assert watcher.client.run_on_scheduler(left) == []
    watcher.client.close()


def test_an_unreachable_scheduler_fails_the_run_before_any_work(store, arxiv, monkeypatch):
    monkeypatch.setenv("ATLAS_DASK_ADDRESS", UNREACHABLE)
    ds = AtlasDataset("unreachable", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(5))
    ds.configure_index(indexed_field="title", topic_model=False, duplicate_detection=False)
    result, _ = build("unreachable", {"dataset", "latent"}, dask=DaskCluster(connect_timeout=1))
    assert not result.success
    message = step_failure(result)
    assert f"cannot reach the Dask scheduler at {UNREACHABLE} within 1 s" in message
    assert message.strip().endswith("the address comes from ATLAS_DASK_ADDRESS")
    assert resource_info(dataset_paths("unreachable").resource("latent")) is None
    assert not list(embedding_cache_dir(model_key(), store).glob("*.arrow"))


def test_uploaded_embeddings_and_the_static_path_ignore_the_address(
    store, arxiv, static_model, monkeypatch
):
    """Neither needs a cluster: with an unreachable address set, both build as before."""
    from atlas_assets.lib import static_embed

    monkeypatch.setenv("ATLAS_DASK_ADDRESS", UNREACHABLE)
    byo_dataset("byo", arxiv.head(12), 8)
    result, _ = build("byo", {"dataset", "latent"})
    assert result.success and "dask_scheduler" not in latent_metadata(result)

    frame = arxiv.head(12)
    ds = AtlasDataset("fast", unique_id_field="arxiv_id")
    ds.add_data(frame)
    ds.configure_index(
        indexed_field="title",
        embedding_model={"mode": "static"},
        topic_model=False,
        duplicate_detection=False,
    )
    static_embed.save(static_model, static_embed.model_file(home=store), source="test")
    result, _ = build("fast", {"dataset", "latent"})
    assert result.success and "dask_scheduler" not in latent_metadata(result)
    np.testing.assert_allclose(
        ds.maps[0].embeddings.latent, static_model.encode(frame["title"].tolist()), atol=1e-6
    )


def test_without_an_address_nothing_from_dask_is_imported(tmp_path):
    """A map's embeddings built in-process, as before, import neither dask nor distributed (a
    fresh interpreter: this one has them loaded for the cluster)."""
    code = """
import sys
import pandas as pd
from atlas_assets import AtlasDataset
from atlas_assets_tests.defs.test_latent_dask import build, latent_metadata
frame = pd.read_csv(sys.argv[1], dtype={"arxiv_id": str}).head(3)
ds = AtlasDataset("plain", unique_id_field="arxiv_id")
ds.add_data(frame)
ds.configure_index(indexed_field="title", topic_model=False, duplicate_detection=False)
result, _ = build("plain", {"dataset", "latent"})
assert result.success and latent_metadata(result)["embedded_now"] == 3
assert not any(k.startswith("dask") for k in latent_metadata(result))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")))
"""
    env = {k: v for k, v in os.environ.items() if k != "ATLAS_DASK_ADDRESS"}
    env |= {"ATLAS_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / ".dagster")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(SAMPLE)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
