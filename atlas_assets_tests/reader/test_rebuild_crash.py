"""A rebuild, killed at any point or running while other processes read, never changes the map
readers see until it is published whole; a killed build's Dagster run is marked failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from starlette.testclient import TestClient

from atlas_assets import AtlasDataset
from atlas_assets.defs.publishing import publish_maps
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.explorer.server import create_app
from atlas_assets.store import (
    RESOURCES,
    StaleResourceError,
    dataset_paths,
    published,
    resource_info,
)
from atlas_assets.store.publish import collect_garbage

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8000"

REBUILD = """
import sys
from atlas_assets import AtlasDataset
seed = int(sys.argv[2])
AtlasDataset(sys.argv[1]).create_index(projection={"seed": seed}, topic_model={"seed": seed})
"""

# Opens the map again and again until told to stop; every open must read one whole map.
READER = """
import json, pathlib, sys
from atlas_assets import AtlasDataset
name, stop, ready = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
opens, errors, mixed, seen = 0, [], [], set()
while not stop.exists():
    try:
        m = AtlasDataset(name).maps[0]
        n = m.data.tb.num_rows
        sizes = {len(m.embeddings.projected), len(m.topics.df), len(m.duplicates.df),
                 len(m.embeddings.latent)}
        seeds = (m.info("projected")["params"]["seed"], m.info("topics")["params"]["seed"])
        if sizes != {n} or seeds[0] != seeds[1]:
            mixed.append([n, sorted(sizes), seeds])
        seen.add(seeds)
        opens += 1
    except Exception as err:
        errors.append(f"{type(err).__name__}: {err}")
    ready.touch()
print(json.dumps({"opens": opens, "errors": errors[:5], "n_errors": len(errors),
                  "mixed": mixed[:5], "seen": sorted(seen)}))
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **kwargs)


def _wait_for_build_files(name: str, resources: set[str], proc: subprocess.Popen) -> None:
    """Return once the build ``proc`` runs has written the files of ``resources``."""
    builds = dataset_paths(name).resources / "builds"
    earlier = {d.name for d in builds.iterdir()}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for folder in builds.iterdir():
            if folder.name not in earlier and all(
                (folder / f"{r}.arrow").is_file() for r in resources
            ):
                return
        assert proc.poll() is None, f"the rebuild ended (code {proc.returncode}) first"
        time.sleep(0.005)  # the last point is a few checks before the commit: poll tightly
    raise AssertionError(f"no build wrote {resources}")


def _snapshot(name: str) -> dict:
    """What a reader sees of the map: its tables and each resource's recorded lineage."""
    atlas_map = AtlasDataset(name).maps[0]
    paths = dataset_paths(name)
    lineage = {r: resource_info(paths.resource(r)) for r in RESOURCES}
    return {
        "n": atlas_map.data.tb.num_rows,
        "projected": atlas_map.embeddings.projected,
        "topics": atlas_map.topics.df,
        "duplicates": atlas_map.duplicates.df,
        "versions": {r: i["dataset_version"] for r, i in lineage.items() if i},
        "seeds": (lineage["projected"]["params"]["seed"], lineage["topics"]["params"]["seed"]),
    }


def _assert_same_map(found: dict, expected: dict) -> None:
    assert found["n"] == expected["n"]
    assert found["versions"] == expected["versions"]
    assert found["seeds"] == expected["seeds"]
    for key in ("projected", "topics", "duplicates"):
        pd.testing.assert_frame_equal(found[key], expected[key])


def _points(client: TestClient, name: str) -> int:
    answer = client.get(f"/api/maps/{name}/points")
    assert answer.status_code == 200, answer.text
    length = int.from_bytes(answer.content[:4], "little")
    return json.loads(answer.content[4 : 4 + length])["n"]


def test_a_rebuild_killed_at_any_point_leaves_the_previous_map_and_no_started_run(
    store, arxiv, monkeypatch
):
    monkeypatch.setenv("ATLAS_PUBLISH_GRACE_SECONDS", "0")
    frame = arxiv.head(70).reset_index(drop=True)
    ds = AtlasDataset("crash", unique_id_field="arxiv_id")
    ds.add_data(frame.head(60))
    ds.create_index(indexed_field="abstract", projection={"seed": 1}, topic_model={"seed": 1})
    before = _snapshot("crash")
    assert before["seeds"] == (1, 1) and len(set(before["versions"].values())) == 1
    # The rebuild has 10 more rows (a new dataset version) and new seeds.
    ds.add_data(frame.iloc[60:])
    client = TestClient(create_app("crash"), base_url=BASE)
    assert _points(client, "crash") == 60

    killed = []
    # Killed after the embedding, after the projection (the reported case: the new projection
    # was served with the old topics), after the topics, and with every file written.
    for written in ({"latent"}, {"projected"}, {"topics"}, set(RESOURCES)):
        proc = _python(REBUILD, "crash", "2", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for_build_files("crash", written, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        killed.append(proc.pid)
        # The previous map reads whole, with its own rows and parameters; the explorer serves it.
        _assert_same_map(_snapshot("crash"), before)
        assert _points(client, "crash") == 60

    with dg.DagsterInstance.get() as instance:
        runs = {
            int(r.dagster_run.tags["atlas/pid"]): r.dagster_run
            for r in instance.get_run_records()
            if "atlas/pid" in r.dagster_run.tags
        }
        assert set(killed) <= set(runs), (killed, {p: r.status for p, r in runs.items()})
        statuses = [runs[pid].status for pid in killed]
        # Each build marked the one killed before it failed; the last waits for the next tick.
        assert statuses == [dg.DagsterRunStatus.FAILURE] * 3 + [dg.DagsterRunStatus.STARTED]
        context = dg.build_sensor_context(instance=instance, resources={"store": AtlasStore()})
        publish_maps(context)
        last = instance.get_run_by_id(runs[killed[-1]].run_id)
        assert last.status == dg.DagsterRunStatus.FAILURE
        assert "process died" in str(
            instance.all_logs(last.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
        )
        # Nothing counts against the run queue's limit any more (the daemon's own statuses).
        assert not instance.get_run_records(
            filters=dg.RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES)
        )
    _assert_same_map(_snapshot("crash"), before)

    # A rerun succeeds and publishes the new map whole; the killed builds' files are gone.
    ds.create_index(projection={"seed": 2}, topic_model={"seed": 2})
    after = _snapshot("crash")
    assert after["n"] == 70 and after["seeds"] == (2, 2)
    assert len(set(after["versions"].values())) == 1 and after["versions"] != before["versions"]
    assert _points(client, "crash") == 70
    paths = dataset_paths("crash")
    current = published(paths)
    assert [d.name for d in (paths.resources / "builds").iterdir()] == [current.build]
    assert not list(paths.root.rglob("*.tmp"))


def test_readers_in_another_process_never_see_a_mixed_map_during_a_rebuild(
    store, arxiv, tmp_path, monkeypatch
):
    ds = AtlasDataset("busy", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(60))
    ds.create_index(indexed_field="abstract", projection={"seed": 1}, topic_model={"seed": 1})
    first = ds.maps[0].embeddings.projected
    opened = ds.maps[0]  # read lazily, after the rebuild
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    reader = _python(
        READER, "busy", str(stop), str(ready), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ds.create_index(projection={"seed": 2}, topic_model={"seed": 2})
        time.sleep(1.0)  # the reader opens the new map too
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["n_errors"] == 0, report["errors"]
    assert report["mixed"] == []
    assert report["seen"] == [[1, 1], [2, 2]] and report["opens"] > 5

    # A map opened before the rebuild keeps reading its own version for the grace period...
    pd.testing.assert_frame_equal(opened.embeddings.projected, first)
    assert not ds.maps[0].embeddings.projected.equals(first)
    # ...and once its files are gone, it says to open the map again rather than mixing.
    monkeypatch.setenv("ATLAS_PUBLISH_GRACE_SECONDS", "0")
    collect_garbage(dataset_paths("busy"))
    with pytest.raises(StaleResourceError, match="open the map again"):
        _ = opened.topics.df
