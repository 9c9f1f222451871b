"""Atomic, versioned files: Arrow IPC resources and JSON documents.

Every resource file is an uncompressed Arrow IPC file (memory-mappable) whose schema metadata
records what it was derived from (``atlas:dataset_version``) and with which parameters. Writes go
to a temporary file in the same folder, flushed to disk (file, then folder) and published by
``os.replace``, so a crash or a power cut leaves the previous version readable and a reader never
sees half a file. Temporary files of killed writers are removed by the next write to their folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from atlas_assets.store import remote
from atlas_assets.store.layout import lease_path
from atlas_assets.store.lease import holder as lease_holder
from atlas_assets.store.lease import lease, wait_released

_META_PREFIX = "atlas:"


class ResourceNotReadyError(FileNotFoundError):
    """A map resource has not been materialized yet."""


class StaleResourceError(RuntimeError):
    """A map resource was derived from a different dataset version than the rest of the map."""


# A temporary file is its writer's while the writer holds a lock on it; one left unlocked this
# long belongs to a killed writer (the age covers the instant between creating and locking it).
STALE_TEMP_SECONDS = 60.0


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> None:
    """``mkdir -p`` whose new folders survive a power cut (each parent is flushed)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        fsync_dir(new.parent)


def clean_temp_files(folder: Path, min_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove temporary files that killed writers left in ``folder``; returns them.

    A live writer holds an exclusive lock on its temporary file until it renames it, so only
    files that are unlocked (and older than ``min_age`` seconds) are removed.
    """
    removed = []
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime < min_age:
                continue
            with open(tmp, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                tmp.unlink()
            removed.append(tmp)
        except (BlockingIOError, FileNotFoundError):
            continue  # a live writer's, or already gone
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The file and then its folder are flushed to disk before and after the rename, so what was
    reported written survives a power cut; a failure or a kill leaves ``path`` as it was.
    """
    make_dirs(path.parent)
    clean_temp_files(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held until the rename: this temporary file is in use
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.fsync(fd)  # same inode as whatever the body wrote through its own handle
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)
        os.close(fd)


def write_json(path: Path, doc: dict[str, Any], *, expect: str | None = None) -> None:
    """Write a JSON document atomically. On a remote store it is one PUT of its object, made
    before the local copy changes (so the mirror never runs ahead of the store); ``expect``
    makes that PUT conditional (see :func:`~atlas_assets.store.remote.upload`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
        remote.upload(tmp, target=path, expect=expect)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON document (on a remote store: its object, read now)."""
    remote.refresh(path)
    return json.loads(path.read_text())


def remove_file(path: Path) -> None:
    """Remove a file of the store (and its object, on a remote store)."""
    remote.remove(path)


@contextlib.contextmanager
def locked(lock_path: Path, *, machine_only: bool = False) -> Iterator[None]:
    """An exclusive inter-process lock (flock) held for the body; serialises store writers.

    On a remote store the writer also holds the lock's lease on the object store (taken inside
    the flock, see ``store/lease.py``), so writers on other machines wait too; ``machine_only``
    is for a file each machine keeps for itself (its flock is enough).
    """
    make_dirs(lock_path.parent)
    shared = None if machine_only else lease_path(lock_path)
    with open(lock_path, "a") as handle, remote.fresh():  # a writer reads what is stored now
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with lease(shared, flock=lock_path) if shared else contextlib.nullcontext():
                yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_locked(lock_path: Path) -> bool:
    """Whether another holder has ``lock_path``'s exclusive lock now (never blocks); on a
    remote store, on any machine (its lease, see ``store/lease.py``)."""
    try:
        handle = open(lock_path)  # noqa: SIM115 - closed below; a missing file is no lock
    except FileNotFoundError:
        handle = None
    if handle is not None:
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    shared = lease_path(lock_path)
    return shared is not None and lease_holder(shared, flock=lock_path) is not None


def wait_unlocked(lock_path: Path) -> None:
    """Block until no one holds ``lock_path``'s exclusive lock (a shared lock, taken and
    released: waiters do not queue behind each other); on a remote store, then until no other
    machine holds its lease either."""
    with contextlib.suppress(FileNotFoundError), open(lock_path) as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        fcntl.flock(handle, fcntl.LOCK_UN)
    shared = lease_path(lock_path)
    if shared is not None:
        wait_released(shared, flock=lock_path)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_arrow(path: Path, table: pa.Table) -> None:
    """Write ``table`` as an uncompressed Arrow IPC file, atomically."""
    with (
        atomic_path(path) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        # One record batch: columns then map to numpy without copies.
        writer.write_table(table.combine_chunks())
    remote.upload(path)  # immutable once written: uploaded once, under its own name


def read_arrow(path: Path) -> pa.Table:
    """Read an Arrow IPC file memory-mapped: columns reference the file, nothing is copied."""
    remote.fetch(path)
    source = pa.memory_map(str(path), "r")
    return pa.ipc.open_file(source).read_all()


def write_resource(
    path: Path,
    table: pa.Table,
    *,
    resource: str,
    dataset_version: str,
    params: dict[str, Any] | None = None,
) -> None:
    """Write a map resource with its lineage (dataset version, parameters, time) in the schema."""
    info = {
        "resource": resource,
        "dataset_version": dataset_version,
        "params": json.dumps(params or {}, sort_keys=True, default=str),
        "created": now_iso(),
    }
    meta = dict(table.schema.metadata or {})
    meta.update({f"{_META_PREFIX}{k}".encode(): str(v).encode() for k, v in info.items()})
    write_arrow(path, table.replace_schema_metadata(meta))


def _info_from_schema(schema: pa.Schema) -> dict[str, Any]:
    raw = schema.metadata or {}
    info = {
        k.decode()[len(_META_PREFIX) :]: v.decode()
        for k, v in raw.items()
        if k.decode().startswith(_META_PREFIX)
    }
    if "params" in info:
        info["params"] = json.loads(info["params"])
    return info


def resource_info(path: Path) -> dict[str, Any] | None:
    """The lineage recorded in a resource file (without reading its data), or None if absent."""
    if not remote.fetch(path):
        return None
    with pa.memory_map(str(path), "r") as source:
        return _info_from_schema(pa.ipc.open_file(source).schema)


def _check_version(path: Path, schema: pa.Schema, expected_version: str | None) -> None:
    if expected_version is not None:
        found = _info_from_schema(schema).get("dataset_version")
        if found != expected_version:
            raise StaleResourceError(
                f"{path.stem!r} was built from dataset version {found}, "
                f"but the dataset is at version {expected_version}"
            )


def read_resource(path: Path, *, expected_version: str | None = None) -> pa.Table:
    """Read a resource memory-mapped; refuse it if it was built from another dataset version."""
    if not remote.fetch(path):
        raise ResourceNotReadyError(str(path))
    table = read_arrow(path)
    _check_version(path, table.schema, expected_version)
    return table


def private_matrix(path: Path, column: str, *, expected_version: str | None = None) -> np.ndarray:
    """A fixed-size-list column of a resource as a writable ``(N, d)`` array, in O(1).

    The file is mapped privately (copy-on-write): the array reads the stored bytes without
    copying them, in-place changes (``a /= norms``, ``faiss.normalize_L2(a)``) copy only the
    pages they touch, in this process's memory, and the file never changes. Arrow parses the
    same mapping, so the array is the file that was checked, even if it is replaced meanwhile.
    """
    if not remote.fetch(path):
        raise ResourceNotReadyError(str(path))
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    whole = pa.py_buffer(mapped)
    table = pa.ipc.open_file(pa.BufferReader(whole)).read_all()
    _check_version(path, table.schema, expected_version)
    chunks = table.column(column)
    if chunks.num_chunks != 1 or chunks.null_count:
        return np.array(matrix(chunks))  # not one contiguous run: a plain writable copy
    arr = chunks.chunk(0)
    width = arr.type.list_size
    values = arr.values.slice(arr.offset * width, len(arr) * width)
    dtype = np.dtype(values.type.to_pandas_dtype())
    start = values.buffers()[1].address + values.offset * dtype.itemsize - whole.address
    flat = np.frombuffer(mapped, dtype=dtype, count=len(arr) * width, offset=start)
    return flat.reshape(len(arr), width)


def fixed_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """An ``(N, d)`` array as an Arrow fixed-size-list column (one list per row)."""
    arr = np.ascontiguousarray(matrix)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])


def matrix(column: pa.ChunkedArray | pa.FixedSizeListArray) -> np.ndarray:
    """A fixed-size-list column as an ``(N, d)`` numpy view: zero-copy for a single chunk."""
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    width = column.type.list_size
    values = column.values.slice(column.offset * width, len(column) * width)
    return values.to_numpy(zero_copy_only=False).reshape(len(column), width)
