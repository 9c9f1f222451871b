"""Datasets on disk: their identity document, immutable source shards and version."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import numpy as np
import pyarrow as pa

from atlas_assets.store.files import locked, now_iso, read_arrow, read_json, write_arrow, write_json
from atlas_assets.store.layout import DatasetPaths

EMBEDDING_COLUMN = "_embedding"  # bring-your-own vectors ride along in the shard


def load_meta(paths: DatasetPaths) -> dict[str, Any] | None:
    """The dataset's identity and index configuration, or None if it does not exist."""
    return read_json(paths.meta) if paths.meta.is_file() else None


def create_meta(
    paths: DatasetPaths, *, description: str, id_field: str, is_public: bool
) -> dict[str, Any]:
    """Create the dataset document if absent (under the dataset lock); return what is stored."""
    with locked(paths.lock):
        meta = load_meta(paths)
        if meta is None:
            meta = {
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
        t = read_arrow(f)
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


def write_shard(paths: DatasetPaths, table: pa.Table, embeddings: np.ndarray | None) -> str:
    """Publish a validated batch as the next immutable shard; the caller holds the dataset lock."""
    if embeddings is not None:
        flat = pa.array(np.ascontiguousarray(embeddings, np.float32).reshape(-1))
        table = table.append_column(
            EMBEDDING_COLUMN, pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1])
        )
    table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest = hashlib.sha256(sink.getvalue()).hexdigest()[:12]
    name = f"{len(paths.shard_files()) + 1:06d}-{digest}.arrow"
    write_arrow(paths.shards / name, table)
    return name


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


def count_rows(paths: DatasetPaths) -> int:
    """Rows uploaded so far, from the shards' footers (no data is read)."""
    total = 0
    for f in paths.shard_files():
        with pa.memory_map(str(f), "r") as source:
            reader = pa.ipc.open_file(source)
            total += sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    return total
