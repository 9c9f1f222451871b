"""A store on S3 (moto's server on 127.0.0.1): a full map builds there, reads back in a fresh
process with no local store equal to the same map built locally, survives builds killed while
writing to S3, and readers opening it during a rebuild see one whole map each time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atlas_assets import AtlasDataset
from atlas_assets.store import RESOURCES, dataset_paths, published
from atlas_assets_tests.conftest import store_at
from atlas_assets_tests.reader.test_rebuild_crash import READER, REBUILD

ROOT = Path(__file__).resolve().parents[2]

# Reads every resource of the published map through the reader and prints a digest of each
# (data only: the schema metadata holds creation times), then opens the map again and lists
# what the second open had to download.
DIGEST = """
import hashlib, json, sys, pathlib
import numpy as np, pyarrow as pa
from atlas_assets import AtlasDataset
from atlas_assets.store import atlas_home

def digest(table):
    sink = pa.BufferOutputStream()
    table = table.replace_schema_metadata(None)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()

def read_all(name):
    m = AtlasDataset(name).maps[0]
    out = {key: digest(m.read(*key.split("."))) for key in sorted(m._published.resources)}
    out["latent"] = hashlib.sha256(np.ascontiguousarray(m.embeddings.latent)).hexdigest()
    out["rows"] = m.data.tb.num_rows
    out["projected.df"] = len(m.embeddings.projected)
    out["topics.df"] = len(m.topics.df)
    out["duplicates.df"] = len(m.duplicates.df)
    out["seeds"] = [m.info("projected")["params"]["seed"], m.info("topics")["params"]["seed"]]
    return out

def cached():
    return {str(p): p.stat().st_mtime_ns for p in atlas_home().rglob("*.arrow")}

first = read_all(sys.argv[1])
before = cached()
second = read_all(sys.argv[1])
print(json.dumps({"first": first, "second_equal": second == first,
                  "downloaded_again": sorted(set(cached().items()) - set(before.items())),
                  "home": str(atlas_home())}))
"""


def _env(cache: Path, **extra: str) -> dict[str, str]:
    """This process's store settings, with another read cache (another machine's)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ATLAS_CACHE_DIR": str(cache), **extra}
    return env


def _python(code: str, *args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **kwargs)


def _digest_in_fresh_process(name: str, cache: Path) -> dict:
    proc = _python(
        DIGEST, name, env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _build(frame, **options) -> None:
    ds = AtlasDataset("papers", unique_id_field="arxiv_id")
    ds.add_data(frame.head(30))
    ds.add_data(frame.iloc[30:])
    ds.create_index(indexed_field="abstract", **options)


def test_a_map_built_on_s3_reads_back_in_a_fresh_process_as_the_local_build_does(
    s3_store, s3_server, arxiv, tmp_path
):
    frame = arxiv.head(50).reset_index(drop=True)
    _build(frame)
    objects = s3_server.fs().find(s3_store.removeprefix("s3://"))
    names = {o.rsplit("/", 1)[-1] for o in objects}
    assert {"dataset.json", "manifest.json"} <= names
    assert {f"{r}.arrow" for r in RESOURCES} <= names
    assert any("/cache/embeddings/" in o for o in objects)  # the embedding cache is shared too
    with store_at(tmp_path / "local"):
        _build(frame)
        local = _digest_in_fresh_process("papers", tmp_path / "unused")

    # A fresh process with an empty read cache: no local store, everything comes from S3.
    fresh = tmp_path / "other-machine"
    found = _digest_in_fresh_process("papers", fresh)
    assert Path(found["home"]).is_relative_to(fresh)
    assert found["first"] == local["first"]
    assert found["first"]["rows"] == 50 and len(found["first"]) > len(RESOURCES)
    # The second open reads the read cache: the same map, nothing downloaded again.
    assert found["second_equal"] and found["downloaded_again"] == []

    # A rebuilt map is fetched anew into the same cache.
    AtlasDataset("papers").create_index(projection={"seed": 5}, topic_model={"seed": 5})
    again = _digest_in_fresh_process("papers", fresh)
    assert again["first"]["seeds"] == [5, 5] != found["first"]["seeds"]
    assert again["first"]["projected"] != found["first"]["projected"]
    assert again["first"]["dataset"] == found["first"]["dataset"]


def _wait_for_objects(fs, builds: str, resources: set[str], proc: subprocess.Popen) -> None:
    """Return once the build ``proc`` runs has uploaded the objects of ``resources``."""
    earlier = set(fs.ls(builds, refresh=True)) if fs.exists(builds) else set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for folder in set(fs.ls(builds, refresh=True)) - earlier if fs.exists(builds) else []:
            there = {o.rsplit("/", 1)[-1] for o in fs.ls(folder, refresh=True)}
            if {f"{r}.arrow" for r in resources} <= there:
                return
        assert proc.poll() is None, f"the rebuild ended (code {proc.returncode}) first"
        time.sleep(0.01)
    raise AssertionError(f"no build uploaded {resources}")


def test_a_build_killed_while_writing_to_s3_leaves_the_previous_map_and_a_rerun_succeeds(
    s3_store, s3_server, arxiv, tmp_path, monkeypatch
):
    monkeypatch.setenv("ATLAS_PUBLISH_GRACE_SECONDS", "0")
    frame = arxiv.head(50).reset_index(drop=True)
    ds = AtlasDataset("crash", unique_id_field="arxiv_id")
    ds.add_data(frame.head(40))
    ds.create_index(indexed_field="abstract", projection={"seed": 1}, topic_model={"seed": 1})
    before = _digest_in_fresh_process("crash", tmp_path / "reader-0")["first"]
    ds.add_data(frame.iloc[40:])  # the rebuild has 10 more rows and new seeds
    fs = s3_server.fs()
    builds = f"{s3_store.removeprefix('s3://')}/datasets/crash/resources/builds"
    cache = Path(os.environ["ATLAS_CACHE_DIR"])  # the writer runs on this machine

    # Three kill points (the local test has four): early, after the topics (the projection is
    # already up), and with every object uploaded but the manifest.
    points = ({"latent"}, {"topics"}, set(RESOURCES))
    for i, written in enumerate(points):
        proc = _python(
            REBUILD,
            "crash",
            "2",
            env=_env(cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _wait_for_objects(fs, builds, written, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        # Another machine (a fresh read cache) reads the previous map, whole; at the last point
        # this machine, whose mirror holds the killed build's files, does too.
        assert _digest_in_fresh_process("crash", tmp_path / f"reader-{i + 1}")["first"] == before
        if written == points[-1]:
            assert _digest_in_fresh_process("crash", cache)["first"] == before

    ds.create_index(projection={"seed": 2}, topic_model={"seed": 2})
    after = _digest_in_fresh_process("crash", tmp_path / "reader-after")["first"]
    assert after["rows"] == 50 and after["seeds"] == [2, 2]
    current = published(dataset_paths("crash"))
    # The killed builds' objects are gone from the bucket (grace period 0 here).
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(builds, refresh=True)] == [current.build]


def test_readers_on_another_machine_never_see_a_mixed_map_while_s3_is_rebuilt(
    s3_store, arxiv, tmp_path
):
    ds = AtlasDataset("busy", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(50))
    ds.create_index(indexed_field="abstract", projection={"seed": 1}, topic_model={"seed": 1})
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    reader = _python(
        READER,
        "busy",
        str(stop),
        str(ready),
        env=_env(tmp_path / "reader-cache"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        ds.create_index(projection={"seed": 2}, topic_model={"seed": 2})
        seen_new = time.monotonic() + 60
        time.sleep(2.0)  # the reader opens the new map too
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n_errors"] == 0, result["errors"]
    assert result["mixed"] == []
    assert result["opens"] > 2 and time.monotonic() < seen_new
    assert [1, 1] in result["seen"] and [2, 2] in result["seen"], result


@pytest.mark.parametrize("url", ["memory://atlas/e2e"])
def test_a_map_builds_on_a_memory_store(url, arxiv, tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_HOME", url)
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    import numpy as np

    vectors = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    ds = AtlasDataset("vectors", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(40)[["arxiv_id", "title"]], embeddings=vectors)
    atlas_map = ds.create_index(modality="embedding")
    assert atlas_map.embeddings.latent.shape == (40, 8)
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "fresh"))  # read through a new mirror
    assert len(AtlasDataset("vectors").maps[0].topics.df) == 40
