"""Writers of one dataset on two machines sharing an S3 store (moto's server; a machine is a
process with its own mirror) exclude each other through the lock's lease on the store: they
take turns, a killed holder's lease is taken over once it lapses, and a lease taken over is
never deleted by its former holder."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atlas_assets.store import dataset_paths, write_json
from atlas_assets.store.datasets import load_meta, update_meta
from atlas_assets.store.files import is_locked, locked, wait_unlocked
from atlas_assets.store.remote import StoreConfigError

ROOT = Path(__file__).resolve().parents[2]
# The holders' lease in these tests (ATLAS_LEASE_SECONDS): short, yet renewed in time on a busy
# machine (every 2/3 s).
LEASE = 2

# A writer: says it is ready, waits for the go file, then three times reads dataset.json, takes
# a while and writes it back counted, under the dataset's lock; prints each turn's start and end.
TURNS = """
import json, sys, time
from pathlib import Path
from atlas_assets.store import dataset_paths
from atlas_assets.store.datasets import load_meta, update_meta
from atlas_assets.store.files import locked
paths, go = dataset_paths("docs"), Path(sys.argv[1])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
for _ in range(3):
    with locked(paths.lock):
        start = time.time()
        count = load_meta(paths)["count"]
        time.sleep(0.2)
        update_meta(paths, count=count + 1)
        print(json.dumps([start, time.time()]), flush=True)
"""


# Holds the dataset's build lock (as a build does), says so, sleeps, says when it lets go.
HOLD = """
import sys, time
from atlas_assets.store import dataset_paths
from atlas_assets.store.files import locked
with locked(dataset_paths("docs").build_lock):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
    print("releasing", time.time(), flush=True)
print("released", flush=True)
"""


def _machine(code: str, *args: str, cache: Path, **env: str) -> subprocess.Popen:
    """Another machine: a process with its own mirror of this test's store."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), "ATLAS_CACHE_DIR": str(cache), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lease_object(s3_store: str, lock: str = ".build.lock") -> dict | None:
    from atlas_assets.store.remote import open_store, storage_options

    fs = open_store(s3_store, storage_options()).fs
    try:
        return json.loads(fs.cat_file(f"{s3_store[5:]}/locks/datasets/docs/{lock}"))
    except FileNotFoundError:
        return None


def _holding(proc: subprocess.Popen) -> None:
    assert proc.stdout.readline() == "held\n", proc.stderr.read()[-3000:]


def test_writers_on_two_machines_take_turns(s3_store, tmp_path, caplog):
    caplog.set_level(logging.WARNING, "atlas_assets.store.lease")
    write_json(dataset_paths("docs").meta, {"count": 0})
    go = tmp_path / "go"
    other = _machine(TURNS, str(go), cache=tmp_path / "a")  # machine A, another process
    here: list[str] = []  # machine B: this process, its own mirror, the same loop

    def turns() -> None:
        while not go.exists():
            time.sleep(0.01)
        for _ in range(3):
            with locked(dataset_paths("docs").lock):
                start = time.time()
                count = load_meta(dataset_paths("docs"))["count"]
                time.sleep(0.2)
                update_meta(dataset_paths("docs"), count=count + 1)
                here.append(json.dumps([start, time.time()]))

    assert other.stdout.readline() == "ready\n"
    thread = threading.Thread(target=turns, daemon=True)
    thread.start()
    go.touch()
    out, err = other.communicate(timeout=120)
    thread.join(120)
    assert other.returncode == 0, err[-3000:]
    turns_ = sorted(json.loads(line) for line in [*out.splitlines(), *here])
    assert len(turns_) == 6, (out, err[-3000:], here)
    for (_, end), (start, _) in zip(turns_, turns_[1:], strict=False):
        assert end <= start, f"two machines held the dataset's lock at once: {turns_}"
    # No update lost (without the lease, one machine's write over the other's is refused).
    assert load_meta(dataset_paths("docs"))["count"] == 6
    # The one that waited said for whom.
    said = err + caplog.text
    assert any(f"waiting for pid {pid} on " in said for pid in (other.pid, os.getpid())), said
    assert _lease_object(s3_store, ".lock") is None  # released


def test_a_build_on_another_machine_holds_up_configuring_the_index(s3_store, tmp_path, caplog):
    import pandas as pd

    from atlas_assets import AtlasDataset

    caplog.set_level(logging.WARNING, "atlas_assets.store.lease")
    ds = AtlasDataset("docs", unique_id_field="id")
    ds.add_data(pd.DataFrame({"id": ["a", "b"], "text": ["one", "two"]}))
    holder = _machine(HOLD, str(LEASE), cache=tmp_path / "a")  # a build on machine A
    try:
        _holding(holder)
        assert ds.is_locked and not ds.is_accepting_data
        ds.configure_index(indexed_field="text")  # create_index's first step: the build lock
        done = time.time()
        out, err = holder.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == 0, err[-3000:]
    assert done > float(out.splitlines()[0].split()[1])  # after A let go, not before
    assert f"waiting for pid {holder.pid} on " in caplog.text
    assert not ds.is_locked and [m["indexed_field"] for m in ds.meta["maps"]] == ["text"]


def _locker(paths, acquired: list[float], release: threading.Event) -> threading.Thread:
    def hold() -> None:
        with locked(paths.build_lock):
            acquired.append(time.monotonic())
            release.wait(60)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_a_killed_holders_lease_is_taken_over_once_it_lapses(s3_store, tmp_path, caplog):
    caplog.set_level(logging.WARNING, "atlas_assets.store.lease")
    holder = _machine(HOLD, "600", cache=tmp_path / "a", ATLAS_LEASE_SECONDS=str(LEASE))
    try:
        _holding(holder)
        assert _lease_object(s3_store)["pid"] == holder.pid
        lock = dataset_paths("docs").build_lock
        assert is_locked(lock)  # AtlasDataset.is_locked: a build runs on another machine
        waited: list[float] = []
        waiter = threading.Thread(target=lambda: waited.append(wait_unlocked(lock) or 1))
        waiter.start()
        acquired, release = [], threading.Event()
        thread = _locker(dataset_paths("docs"), acquired, release)
        time.sleep(1.5 * LEASE)  # longer than the lease: the live holder's renewals keep it
        assert acquired == [] and waited == []
        killed = time.monotonic()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        thread.join(0.1)
        deadline = time.monotonic() + 30
        while not acquired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert acquired and acquired[0] > killed
        assert _lease_object(s3_store)["pid"] == os.getpid()
        release.set()
        thread.join(30)
        waiter.join(30)
        assert waited and not is_locked(lock)
    finally:
        holder.kill()
        holder.wait()
    said = caplog.text
    assert f"waiting for pid {holder.pid} on " in said
    assert f"took over the lease of pid {holder.pid} on " in said
    assert f"went {LEASE} s without renewal" in said
    assert _lease_object(s3_store) is None


def test_a_lease_left_by_a_killed_process_of_this_machine_is_taken_at_once(
    s3_store, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, "atlas_assets.store.lease")
    holder = _machine(HOLD, "600", cache=Path(os.environ["ATLAS_CACHE_DIR"]))  # this machine
    try:
        _holding(holder)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
    assert _lease_object(s3_store)["pid"] == holder.pid  # left behind, for 60 s by default
    assert not is_locked(dataset_paths("docs").build_lock)  # its holder is gone
    start = time.monotonic()
    with locked(dataset_paths("docs").build_lock):
        assert _lease_object(s3_store)["pid"] == os.getpid()
    assert time.monotonic() - start < 30  # not the lease's 60 s
    assert f"took over the lease of pid {holder.pid} on " in caplog.text
    assert "its process on this machine is gone" in caplog.text


def test_a_lease_taken_over_is_never_deleted_by_its_former_holder(s3_store, tmp_path):
    # The holder stalls (SIGSTOP: a suspended laptop, a frozen VM) past its lease's lapse.
    holder = _machine(HOLD, str(2.5 * LEASE), cache=tmp_path / "a", ATLAS_LEASE_SECONDS=str(LEASE))
    acquired, release = [], threading.Event()
    thread = None
    try:
        _holding(holder)
        os.kill(holder.pid, signal.SIGSTOP)
        thread = _locker(dataset_paths("docs"), acquired, release)
        deadline = time.monotonic() + 30
        while not acquired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert acquired, "the stalled holder's lease was not taken over"
        os.kill(holder.pid, signal.SIGCONT)  # it wakes up, finds it lost the lease, and ends
        out, err = holder.communicate(timeout=60)
        assert holder.returncode == 0 and out.endswith("released\n"), err[-3000:]
        assert "lease lapsed" in err and f"now held by pid {os.getpid()} on " in err, err
        # Its release left our lease alone.
        assert _lease_object(s3_store)["pid"] == os.getpid()
    finally:
        release.set()
        if thread is not None:
            thread.join(30)
        holder.kill()
        holder.wait()
    assert _lease_object(s3_store) is None


def test_a_bad_lease_duration_is_one_clear_error_before_anything_is_written(
    s3_store, tmp_path, monkeypatch
):
    paths = dataset_paths("docs")
    monkeypatch.setenv("ATLAS_LEASE_SECONDS", "soon")
    with (
        pytest.raises(StoreConfigError, match="ATLAS_LEASE_SECONDS='soon': expected a positive"),
        locked(paths.lock),
    ):
        write_json(paths.meta, {"count": 0})
    assert _lease_object(s3_store, ".lock") is None and load_meta(paths) is None
    # A local store takes no lease: its flock is all, as before.
    with locked(dataset_paths("docs", tmp_path / "local").lock):
        pass
