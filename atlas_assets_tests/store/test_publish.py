"""Publishing a map whole: builds stay invisible until committed, commits never mix two maps,
superseded and killed files go, and atomic writes reach the disk before they are reported."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from atlas_assets.store import (
    SupersededError,
    bind_run,
    commit,
    dataset_paths,
    published,
    read_resource,
    write_json,
    write_resource,
)
from atlas_assets.store import files as store_files
from atlas_assets.store.publish import collect_garbage, discard, pending_builds
from atlas_assets.store.remote import resolve_root
from atlas_assets_tests.store.conftest import without_lease

ROOT = Path(__file__).resolve().parents[2]
FULL = ("dataset", "projected", "topics")


def write(run, name: str, value: int, part: str | None = None) -> None:
    """One tiny resource of build ``run`` whose single cell tells which build wrote it."""
    write_resource(
        run.output(name, part), pa.table({"v": [value]}), resource=name, dataset_version="v"
    )


def value(path: Path) -> int:
    return read_resource(path).column("v")[0].as_py()


def values(paths, names=FULL) -> dict[str, int]:
    current = published(READERS.get(paths.root, paths))
    return {n: value(current.path(n)) for n in names if n in current.resources}


def build(paths, run_id: str, number: int, names=FULL):
    run = bind_run(paths, run_id)
    for name in names:
        write(run, name, number)
    return run


# On S3, what a reader sees is read through a second mirror (another machine's read cache).
READERS: dict[Path, object] = {}


@pytest.fixture(params=["local", "s3"])
def paths(request, tmp_path):
    """One dataset's paths on a local store, and on S3 (moto's server): the same tests hold."""
    if request.param == "local":
        return dataset_paths("pub", tmp_path)
    server = request.getfixturevalue("s3_server")
    # The reader asks the store on every read (by default a process trusts what it read for
    # ATLAS_REFRESH_SECONDS, outside writers' locks).
    request.getfixturevalue("monkeypatch").setenv("ATLAS_REFRESH_SECONDS", "0")
    url, options = f"s3://{server.new_bucket()}/store", server.options()
    writer = dataset_paths("pub", resolve_root(url, options, setting="t", cache=tmp_path / "w"))
    READERS[writer.root] = dataset_paths(
        "pub", resolve_root(url, options, setting="t", cache=tmp_path / "r")
    )
    return writer


def test_a_build_is_invisible_until_committed_then_published_at_once(paths):
    build(paths, "run-a", 1)
    assert published(paths).resources == {} and pending_builds(paths) == ["run-a"]
    commit(paths, "run-a")
    assert values(paths) == {"dataset": 1, "projected": 1, "topics": 1}
    opened = published(paths)  # a reader that opened this version keeps reading it
    build(paths, "run-b", 2, names=("projected",))
    assert values(paths) == {"dataset": 1, "projected": 1, "topics": 1}
    commit(paths, "run-b")  # a partial build over the map it read: the rest is kept
    assert values(paths) == {"dataset": 1, "projected": 2, "topics": 1}
    assert value(opened.path("projected")) == 1
    assert published(paths).generation == 2 and pending_builds(paths) == []


def test_a_partial_build_over_a_replaced_map_is_refused_a_full_one_is_not(paths):
    commit(build(paths, "run-a", 1), "run-a")
    partial = build(paths, "run-b", 2, names=("projected",))
    full = build(paths, "run-c", 3)  # both read generation 1
    commit(paths, "run-c")
    assert partial.base == full.base == 1
    with pytest.raises(SupersededError, match="run-b"):
        commit(paths, "run-b")
    assert values(paths) == {"dataset": 3, "projected": 3, "topics": 3}
    commit(build(paths, "run-d", 4), "run-d")  # a full build from an older read replaces all
    assert values(paths) == {"dataset": 4, "projected": 4, "topics": 4}


def test_committing_twice_or_a_discarded_build_changes_nothing(paths):
    commit(build(paths, "run-a", 1), "run-a")
    commit(build(paths, "run-b", 2), "run-b")
    commit(paths, "run-a")  # already published once: never published again over run-b
    assert values(paths) == {"dataset": 2, "projected": 2, "topics": 2}
    build(paths, "run-c", 3)
    discard(paths, "run-c")  # its run failed
    commit(paths, "run-c")
    assert values(paths) == {"dataset": 2, "projected": 2, "topics": 2}
    assert published(paths).generation == 2


def test_a_build_long_out_of_the_history_is_still_never_committed_again(paths, monkeypatch):
    from atlas_assets.store import publish

    monkeypatch.setattr(publish, "_HISTORY", 1)
    commit(build(paths, "run-a", 1), "run-a")
    commit(build(paths, "run-b", 2, names=("projected",)), "run-b")
    commit(build(paths, "run-c", 3, names=("topics",)), "run-c")
    assert published(paths).history == ("run-c",)  # run-a's dataset is still published
    assert pending_builds(paths) == []
    commit(paths, "run-a")
    assert values(paths) == {"dataset": 1, "projected": 2, "topics": 3}


def test_a_re_execution_reads_and_publishes_what_its_failed_parent_built(paths):
    commit(build(paths, "run-a", 1), "run-a")
    build(paths, "parent", 2, names=("dataset", "projected"))  # then failed at topics
    discard(paths, "parent")
    child = bind_run(paths, "child", parents=("parent",))  # "re-execute from failure"
    assert value(child.resource("projected")) == 2  # the parent's, not the published one
    write(child, "topics", 2)
    commit(paths, "child")
    assert values(paths) == {"dataset": 2, "projected": 2, "topics": 2}
    assert "builds/parent" not in published(paths).retired  # in use again: kept


def test_a_dropped_resource_leaves_the_map_with_its_parts(paths):
    run = build(paths, "run-a", 1, names=("dataset", "duplicates"))
    write(run, "duplicates", 1, part="pairs")
    commit(paths, "run-a")
    assert set(published(paths).resources) == {"dataset", "duplicates", "duplicates.pairs"}
    run = build(paths, "run-b", 2, names=("dataset",))
    run.drop("duplicates")
    assert not run.resource("duplicates").exists()  # the run itself no longer sees it
    assert published(paths).path("duplicates").exists()  # readers still do
    commit(paths, "run-b")
    assert set(published(paths).resources) == {"dataset"}


def test_a_run_uses_the_configuration_it_started_with(paths):
    from atlas_assets.store.datasets import map_config

    write_json(paths.meta, {"maps": [{"name": "m", "projection": {"seed": 1}}]})
    run = build(paths, "run-a", 1, names=("dataset",))
    write_json(paths.meta, {"maps": [{"name": "m", "projection": {"seed": 2}}]})  # mid-run
    assert map_config(run)["projection"] == {"seed": 1}
    assert map_config(paths)["projection"] == {"seed": 2}
    commit(paths, "run-a")
    assert published(paths).config["projection"] == {"seed": 1}


def test_superseded_files_go_after_the_grace_period_and_a_store_from_before_manifests_is_read(
    paths, monkeypatch
):
    if paths.root in READERS:
        pytest.skip("no store on S3 predates manifests")
    # A store written before manifests: resource files in the resources folder.
    write_resource(
        paths.resources / "dataset.arrow", pa.table({"v": [0]}), resource="d", dataset_version="v"
    )
    assert values(paths) == {"dataset": 0}
    monkeypatch.setenv("ATLAS_PUBLISH_GRACE_SECONDS", "3600")
    commit(build(paths, "run-a", 1), "run-a")
    commit(build(paths, "run-b", 2), "run-b")
    # Still there for readers that opened them: the old file and run-a's build.
    assert (paths.resources / "dataset.arrow").exists()
    assert (paths.resources / "builds" / "run-a").is_dir()
    monkeypatch.setenv("ATLAS_PUBLISH_GRACE_SECONDS", "0")
    assert sorted(collect_garbage(paths)) == ["builds/run-a", "dataset.arrow"]
    assert [d.name for d in (paths.resources / "builds").iterdir()] == ["run-b"]
    assert values(paths) == {"dataset": 2, "projected": 2, "topics": 2}
    assert published(paths).retired == {}


def test_atomic_write_flushes_the_file_then_the_folder_around_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "new" / "doc.json"
    write_json(target, {"a": 1})
    # The new folder is flushed into its parent; then file, rename, folder.
    assert calls == ["fsync folder", "fsync file", "rename", "fsync folder"]
    assert target.read_text().strip().startswith("{")


WRITER = """
import sys, time
from pathlib import Path
from atlas_assets.store.files import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half a file")
    print("writing", flush=True)
    time.sleep(120)
"""


def test_temp_files_of_killed_writers_are_removed_those_of_live_ones_kept(tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path / name)], env=env, stdout=subprocess.PIPE
        )
        for name in ("killed.arrow", "alive.arrow")
    ]
    try:
        for proc in writers:
            assert proc.stdout.readline() == b"writing\n"
        killed, alive = writers
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        temps = {p.name.split(".")[1]: p for p in tmp_path.glob(".*.tmp")}
        assert set(temps) == {"killed", "alive"}
        old = time.time() - 2 * store_files.STALE_TEMP_SECONDS
        for p in temps.values():
            os.utime(p, (old, old))
        write_json(tmp_path / "next.json", {})  # the next write to the folder cleans up
        assert sorted(p.name.split(".")[1] for p in tmp_path.glob(".*.tmp")) == ["alive"]
        assert not (tmp_path / "killed.arrow").exists()
    finally:
        for proc in writers:
            proc.kill()
            proc.wait()


def test_commits_from_two_machines_at_once_never_lose_one(paths, monkeypatch):
    if paths.root not in READERS:
        pytest.skip("machines share only a remote store (one machine's commits take its lock)")
    from atlas_assets.store import publish

    other = READERS[paths.root]  # another machine's mirror of the same S3 store, writing too
    commit(build(paths, "run-a", 1), "run-a")
    # A commits inside B's commit: A's lease lapsed while it stalled (else it waits for B's).
    without_lease(monkeypatch, paths)
    build(other, "run-b", 2)
    real, raced = publish._current, []

    def racing(view):
        """Machine B has read the manifest: machine A publishes before B writes it."""
        current = real(view)
        if view.root == other.root and not raced:
            raced.append(current.generation)
            commit(build(paths, "run-c", 3), "run-c")
        return current

    monkeypatch.setattr(publish, "_current", racing)
    commit(other, "run-b")
    assert raced == [1]
    # B's commit was worked out again over A's: both are in the history, B's map is published.
    assert published(paths).history == ("run-a", "run-c", "run-b")
    assert published(paths).generation == 3
    assert values(paths) == {"dataset": 2, "projected": 2, "topics": 2}
