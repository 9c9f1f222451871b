"""Datasets on disk: their identity document, immutable source shards and version."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atlas_assets.options import IndexConfig
from atlas_assets.store.files import (
    locked,
    now_iso,
    read_arrow,
    read_json,
    remove_file,
    write_arrow,
    write_json,
)
from atlas_assets.store.layout import SHARD_NAME, DatasetPaths
from atlas_assets.store.remote import claim

EMBEDDING_COLUMN = "_embedding"  # bring-your-own vectors ride along in the shard
# Facts published with a shard, in its schema metadata, so they are on disk exactly when the
# rows are: the generated-id counter after the batch, and the inbox file it came from.
_SHARD_INFO = b"atlas:shard"


def load_meta(paths: DatasetPaths) -> dict[str, Any] | None:
    """The dataset's identity and index configuration, or None if it does not exist."""
    try:
        return read_json(paths.meta)
    except FileNotFoundError:
        return None


def new_meta(
    paths: DatasetPaths, *, description: str, id_field: str, is_public: bool
) -> dict[str, Any]:
    """A new dataset document (not written: a dataset exists once its first batch is stored)."""
    return {
        "id": str(uuid.uuid4()),
        "identifier": paths.identifier,
        "slug": paths.slug,
        "namespace": paths.namespace,
        "description": description,
        "id_field": id_field,
        "is_public": is_public,
        "created_timestamp": now_iso(),
        "maps": [],
        "next_generated_id": 0,
    }


def create_meta(
    paths: DatasetPaths, *, description: str, id_field: str, is_public: bool
) -> dict[str, Any]:
    """Create the dataset document if absent (under the dataset lock); return what is stored."""
    with locked(paths.lock):
        meta = load_meta(paths)
        if meta is None:
            meta = new_meta(paths, description=description, id_field=id_field, is_public=is_public)
            write_json(paths.meta, meta)
        return meta


def store_meta(paths: DatasetPaths, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``meta`` unless the dataset has data; return what is stored. The caller holds the
    dataset lock. A document without shards (left by a crash) takes the new one's id field."""
    stored = load_meta(paths)
    if stored is not None and paths.shard_files():
        return stored
    if stored is not None:
        meta = {**stored, "id_field": meta["id_field"]}
    write_json(paths.meta, meta)
    return meta


def update_meta(paths: DatasetPaths, **changes: Any) -> dict[str, Any]:
    """Apply ``changes`` to the stored document atomically; the caller holds the dataset lock."""
    meta = load_meta(paths) or {}
    meta.update(changes)
    write_json(paths.meta, meta)
    return meta


def read_shards(
    paths: DatasetPaths, columns: list[str] | None = None, *, names: list[str] | None = None
) -> pa.Table | None:
    """Source rows in upload order (memory-mapped), or None before the first upload.

    ``names`` restricts the read to those shards (a version's snapshot); default: all of them.
    """
    files = paths.shard_files() if names is None else [paths.shards / n for n in names]
    if not files:
        return None
    tables = []
    for f in files:
        t = read_arrow(f).replace_schema_metadata(None)  # shard info stays with its shard
        tables.append(t.select([c for c in columns if c in t.column_names]) if columns else t)
    return pa.concat_tables(tables, promote_options="permissive")


def shard_schema(paths: DatasetPaths) -> pa.Schema | None:
    """The user columns' schema over all stored shards (null-typed columns take others' types)."""
    files = paths.shard_files()
    if not files:
        return None
    schemas = []
    for f in files:  # footers only: no data is read
        with pa.memory_map(str(f), "r") as source:
            schemas.append(pa.ipc.open_file(source).schema)
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    return pa.schema([f.remove_metadata() for f in schema if not f.name.startswith("_")])


def stored_embedding_dim(paths: DatasetPaths) -> int | None:
    """The dimension of bring-your-own vectors in the shards, None if they carry none."""
    files = paths.shard_files()
    if not files:
        return None
    with pa.memory_map(str(files[0]), "r") as source:
        schema = pa.ipc.open_file(source).schema
    if EMBEDDING_COLUMN not in schema.names:
        return None
    return schema.field(EMBEDDING_COLUMN).type.list_size


def write_shard(
    paths: DatasetPaths,
    table: pa.Table,
    embeddings: np.ndarray | None,
    info: dict[str, Any] | None = None,
) -> str:
    """Publish a validated batch as the next immutable shard; the caller holds the dataset lock.

    ``info`` (JSON) is stored in the shard's schema metadata, published with its rows.
    """
    if embeddings is not None:
        flat = pa.array(np.ascontiguousarray(embeddings, np.float32).reshape(-1))
        table = table.append_column(
            EMBEDDING_COLUMN, pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1])
        )
    if info:
        table = table.replace_schema_metadata({_SHARD_INFO: json.dumps(info, sort_keys=True)})
    seq = len(paths.shard_files()) + 1
    # On S3 the batch number is claimed first (a conditional create): a machine adding a batch
    # to the same dataset at the same moment takes the next number, so neither hides the other.
    while not claim(paths.shards / ".claims" / f"{seq:06d}"):
        seq += 1
    return _publish(paths, table, f"{seq:06d}")


def _publish(paths: DatasetPaths, table: pa.Table, prefix: str) -> str:
    table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest = hashlib.sha256(sink.getvalue()).hexdigest()[:12]
    name = f"{prefix}-{digest}.arrow"
    write_arrow(paths.shards / name, table)
    return name


def shard_info(path: Path) -> dict[str, Any]:
    """The facts published with one shard (its footer only is read)."""
    with pa.memory_map(str(path), "r") as source:
        raw = (pa.ipc.open_file(source).schema.metadata or {}).get(_SHARD_INFO)
    return json.loads(raw) if raw else {}


def next_generated_id(paths: DatasetPaths, meta: dict[str, Any]) -> int:
    """The first generated id not used yet: published with the shards, so a writer killed after
    publishing one never makes the next batch repeat its ids."""
    counters = [int(shard_info(f).get("next_generated_id", 0)) for f in paths.shard_files()]
    return max([int(meta.get("next_generated_id", 0)), *counters])


def ingested_sources(paths: DatasetPaths) -> set[str]:
    """Content hashes of the files whose rows are stored (see ``inbox``)."""
    return {h for f in paths.shard_files() if (h := shard_info(f).get("source_sha256"))}


def prune_superseded(paths: DatasetPaths) -> None:
    """Remove shard revisions that a later revision replaced; the caller holds the lock."""
    current = set(paths.shard_files())
    for f in paths.all_shard_files():
        if f not in current and SHARD_NAME.match(f.name):
            remove_file(f)


def delete_rows(paths: DatasetPaths, id_field: str, ids: set[str]) -> int:
    """Rewrite the shards holding ``ids`` without them; returns rows removed. Caller holds lock.

    Each rewritten shard is published as a new revision before the old file goes, so a crash
    leaves either version of it, never both, and no other shard changes.
    """
    removed = 0
    for f in paths.shard_files():
        table = read_arrow(f)
        keep = pc.invert(pc.is_in(table.column(id_field), pa.array(sorted(ids), pa.string())))
        dropped = table.num_rows - pc.sum(keep.cast(pa.int64())).as_py()
        if dropped == 0:
            continue
        match = SHARD_NAME.match(f.name)
        _publish(paths, table.filter(keep), f"{match[1]}r{int(match[2] or 0) + 1}")
        remove_file(f)
        removed += dropped
    return removed


def remove_last_batches(paths: DatasetPaths, count: int) -> list[tuple[str, int]]:
    """Remove the dataset's last ``count`` batches (the way out of a bad upload); returns their
    shard names and row counts, last first.

    The generated-id counter is saved first, so ids are never reused. Shards go one file at a
    time from the end, so a crash leaves a valid dataset with fewer batches removed.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    with locked(paths.lock):
        meta = load_meta(paths)
        if meta is None:
            raise LookupError(f"dataset {paths.identifier!r} does not exist")
        prune_superseded(paths)
        shards = paths.shard_files()
        if count > len(shards):
            raise ValueError(
                f"dataset {paths.identifier!r} has {len(shards)} batches; cannot remove {count}"
            )
        update_meta(paths, next_generated_id=next_generated_id(paths, meta))
        removed = []
        for f in reversed(shards[-count:]):
            removed.append((f.name, count_rows_of(f)))
            remove_file(f)
        return removed


def version_of(shard_names: list[str]) -> str:
    """The dataset version of a list of shards: their names carry content hashes, in order."""
    return hashlib.sha256("\n".join(shard_names).encode()).hexdigest()[:16]


def snapshot(paths: DatasetPaths) -> tuple[list[str], str]:
    """The current shard names and the dataset version they make."""
    names = [f.name for f in paths.shard_files()]
    return names, version_of(names)


def map_config(paths: DatasetPaths) -> dict[str, Any]:
    """The dataset's index configuration (one map per dataset), or a clear error.

    A run's view (:class:`~atlas_assets.store.publish.RunPaths`) gets the configuration its
    build started with, so a configuration recorded mid-run never mixes into the build.
    """
    from atlas_assets.store.publish import RunPaths

    if isinstance(paths, RunPaths) and (pinned := paths.pinned_config()) is not None:
        return pinned
    meta = load_meta(paths)
    if meta is None:
        raise LookupError(
            f"dataset {paths.identifier!r} does not exist: add data first (atlas add)"
        )
    if not meta.get("maps"):
        raise LookupError(
            f"dataset {paths.identifier!r} has no index yet: run "
            f"`atlas index {paths.identifier} --field <text column>` (or create_index in Python)"
        )
    return meta["maps"][0]


def index_config(paths: DatasetPaths) -> IndexConfig:
    """:func:`map_config`, parsed: which stages are on and with which options."""
    return IndexConfig(map_config(paths))


def count_rows_of(shard: Path) -> int:
    """Rows of one shard, from its footer and batch headers."""
    with pa.memory_map(str(shard), "r") as source:
        reader = pa.ipc.open_file(source)
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def count_rows(paths: DatasetPaths) -> int:
    """Rows uploaded so far, from the shards' footers (no data is read)."""
    return sum(count_rows_of(f) for f in paths.shard_files())
