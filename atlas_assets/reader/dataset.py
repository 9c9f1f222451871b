"""``AtlasDataset``: a dataset in the local store, with the hosted client's methods."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from atlas_assets.lib import validate
from atlas_assets.options import (
    NomicDuplicatesOptions,
    NomicEmbedOptions,
    NomicProjectOptions,
    NomicTopicOptions,
    check_local_model,
    coerce_options,
)
from atlas_assets.reader.map import AtlasIndex, AtlasMap
from atlas_assets.store import dataset_paths, list_datasets
from atlas_assets.store.datasets import (
    count_rows,
    delete_rows,
    ingested_sources,
    load_meta,
    new_meta,
    next_generated_id,
    prune_superseded,
    read_shards,
    shard_schema,
    store_meta,
    stored_embedding_dim,
    update_meta,
    write_shard,
)
from atlas_assets.store.files import is_locked, locked, now_iso, wait_unlocked
from atlas_assets.store.remote import remove_tree

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _short_id(n: int) -> str:
    """Base-62 digits of ``n``: short, stable ids in upload order."""
    digits = ""
    while True:
        n, r = divmod(n, 62)
        digits = _ID_ALPHABET[r] + digits
        if n == 0:
            return digits


class AtlasDataset:
    """A dataset in the local store: opens it, or creates it if it does not exist.

    ``identifier`` is normalised to a slug as the hosted client does (``"Café News (AG)"`` ->
    ``cafe-news-ag``, ``"news.v2"`` -> ``newsv2``); an ``org/`` prefix is kept as a namespace
    folder. Without ``unique_id_field`` the dataset generates an ``id_`` column of stable, unique
    short ids. ``dataset_id`` opens an existing dataset by its ``id`` instead.
    """

    def __init__(
        self,
        identifier: str | None = None,
        description: str = "",
        unique_id_field: str | None = None,
        is_public: bool = True,
        dataset_id: str | None = None,
    ) -> None:
        if identifier is None and dataset_id is None:
            raise ValueError("pass a dataset identifier (or the dataset_id of an existing one)")
        if identifier is None:
            identifier = _identifier_of(dataset_id)
        self._paths = dataset_paths(identifier)
        self._deleted = False
        existing = load_meta(self._paths)
        if existing and unique_id_field and existing["id_field"] != unique_id_field:
            if self._paths.shard_files():
                raise ValueError(
                    f"dataset {self._paths.identifier!r} already uses id field "
                    f"{existing['id_field']!r}, not {unique_id_field!r}"
                )
            with locked(self._paths.lock):  # no data depends on it yet (a crash left it empty)
                existing = update_meta(self._paths, id_field=unique_id_field)
        # Written by the first batch stored: a refused batch leaves no dataset behind.
        self._meta = existing or new_meta(
            self._paths,
            description=description,
            id_field=unique_id_field or validate.GENERATED_ID_FIELD,
            is_public=is_public,
        )

    # -- identity -------------------------------------------------------------------------
    def _refresh(self) -> dict[str, Any]:
        if self._deleted:
            raise ValueError(f"dataset {self.identifier!r} was deleted")
        self._meta = load_meta(self._paths) or self._meta
        return self._meta

    @property
    def meta(self) -> dict[str, Any]:
        """The dataset's stored document, with the hosted client's key names added
        (``project_name``, ``slug``, ``organization_slug``, ``unique_id_field``, ``modality``,
        ``total_datums_in_project``, ``project_fields``, ``atlas_indices``,
        ``insert_update_delete_lock``), read fresh."""
        meta = dict(self._refresh())
        meta.update(
            project_name=self.name,
            slug=self.slug,
            organization_slug=self._paths.namespace,
            unique_id_field=meta.get("id_field"),
            modality=self.modality,
            total_datums_in_project=self.total_datums,
            project_fields=self.dataset_fields,
            atlas_indices=[
                {"id": m.atlas_index_id, "index_name": m.name, **m.config} for m in self.maps
            ],
            insert_update_delete_lock=self.is_locked,
        )
        return meta

    @property
    def modality(self) -> str:
        """``"embedding"`` for a dataset of uploaded vectors, else ``"text"`` (images are not
        supported)."""
        return "embedding" if stored_embedding_dim(self._paths) is not None else "text"

    @property
    def schema(self) -> pa.Schema | None:
        """The Arrow schema of the uploaded columns (id field first); None before any data."""
        return shard_schema(self._paths)

    @property
    def id(self) -> str:
        return self._meta["id"]

    @property
    def identifier(self) -> str:
        return self._paths.identifier

    @property
    def slug(self) -> str:
        return self._paths.slug

    @property
    def name(self) -> str:
        return self._paths.slug

    @property
    def description(self) -> str:
        return self._meta.get("description", "")

    @property
    def id_field(self) -> str:
        return self._meta["id_field"]

    @property
    def created_timestamp(self) -> str:
        return self._meta["created_timestamp"]

    @property
    def is_public(self) -> bool:
        return bool(self._meta.get("is_public", True))

    @property
    def total_datums(self) -> int:
        """Rows uploaded so far (whether or not a map includes them yet)."""
        return count_rows(self._paths)

    @property
    def dataset_fields(self) -> list[str]:
        """The user columns, id field first."""
        schema = shard_schema(self._paths)
        return [] if schema is None else list(schema.names)

    @property
    def maps(self) -> list[AtlasMap]:
        """One map per index, in creation order; ``[]`` before the first ``create_index``."""
        return [AtlasMap(self, m) for m in self._refresh().get("maps", [])]

    @property
    def indices(self) -> list[AtlasIndex]:
        """The dataset's indices, each with its maps (``projections``): one map per index."""
        return [AtlasIndex(m) for m in self.maps]

    @property
    def projections(self) -> list[AtlasMap]:
        """The same list as :attr:`maps` (the hosted client's name)."""
        return self.maps

    def get_map(
        self,
        name: str | None = None,
        atlas_index_id: str | None = None,
        projection_id: str | None = None,
    ) -> AtlasMap:
        """A map by ``name`` (its name, or that name's slug), ``atlas_index_id`` or
        ``projection_id``; with none of them, the dataset's only map. Otherwise a ``ValueError``.
        """
        maps = self.maps
        if atlas_index_id is not None or projection_id is not None:
            for atlas_map in maps:
                if atlas_index_id in (None, atlas_map.atlas_index_id) and projection_id in (
                    None,
                    atlas_map.projection_id,
                ):
                    return atlas_map
            wanted = {"atlas_index_id": atlas_index_id, "projection_id": projection_id}
            described = " and ".join(f"{k}={v!r}" for k, v in wanted.items() if v is not None)
            raise ValueError(f"dataset {self.identifier!r} has no map with {described}")
        if not maps:
            raise ValueError(
                f"dataset {self.identifier!r} has no map yet: build one with create_index"
            )
        if name is None:
            if len(maps) > 1:
                raise ValueError(f"dataset {self.identifier!r} has several maps: pass a name")
            return maps[0]
        for atlas_map in maps:
            if atlas_map.name == name or _same_slug(atlas_map.name, name):
                return atlas_map
        raise ValueError(
            f"dataset {self.identifier!r} has no map named {name!r}; "
            f"its maps are {[m.name for m in maps]}"
        )

    # -- the build lock ----------------------------------------------------------------------
    @property
    def is_locked(self) -> bool:
        """True while a map of this dataset is being built (by any process), else False.

        ``create_index`` builds synchronously, so in the calling process it is False again by
        the time it returns.
        """
        return is_locked(self._paths.build_lock)

    @property
    def is_accepting_data(self) -> bool:
        """``not is_locked``: whether no build of this dataset is running now."""
        return not self.is_locked

    @contextlib.contextmanager
    def wait_for_dataset_lock(self) -> Iterator[AtlasDataset]:
        """Wait until no build of this dataset is running (in any process), then yield it.

        ``with dataset.wait_for_dataset_lock(): ...`` as in the hosted client. Builds are
        synchronous here, so after your own ``create_index`` it yields at once; the body runs
        without holding anything, so it may call ``add_data`` or ``create_index`` itself.
        """
        self._refresh()
        wait_unlocked(self._paths.build_lock)
        yield self

    def __repr__(self) -> str:
        return f"AtlasDataset({self.identifier!r}, total_datums={self.total_datums})"

    # -- writing ---------------------------------------------------------------------------
    def add_data(
        self, data: Any = None, embeddings: Any = None, blobs: Any = None, pbar: Any = None
    ) -> None:
        """Append a batch: a DataFrame, Arrow table or list of dicts, optionally with vectors.

        The batch becomes one new immutable shard, written atomically. A batch that breaks any
        rule (ids missing, null, empty, repeated, with surrounding whitespace or control
        characters; ``_`` columns; names equal ignoring case; a schema unlike the stored one;
        values Arrow cannot store, such as mixed types, lone surrogates or invalid UTF-8; a
        text cell over ``MAX_CELL_BYTES``; NaN/inf, zero or wrongly shaped embeddings, also
        once cast to float32) raises a ``ValueError`` naming the column and rows, and nothing is
        written. The first batch stored creates the dataset on disk.

        ``embeddings`` alone (``data=None``) adds vectors with generated ids and no other
        columns; an Arrow table's ``_embeddings`` column is taken as ``embeddings``, as the
        hosted client does. ``pbar`` (a tqdm bar) is advanced by the rows added. ``blobs``
        (images) are not supported: a ``ValueError``.
        """
        if blobs is not None:
            raise ValueError(
                "blobs= (images) is not supported: atlas-assets maps texts and embeddings; "
                "embed your images yourself and pass add_data(data, embeddings=vectors)"
            )
        if isinstance(data, pa.Table) and "_embeddings" in data.column_names and embeddings is None:
            embeddings = np.array(data.column("_embeddings").to_pylist(), dtype=np.float32)
            data = data.drop_columns(["_embeddings"])
        rows = self._add(data, embeddings)
        if pbar is not None:
            pbar.update(rows)

    def _add(self, data: Any, embeddings: Any = None, *, source: str | None = None) -> int:
        """``add_data``; ``source`` is the content hash of the file the batch came from: a file
        already stored adds nothing (returns 0), else returns the rows added. The hash is
        published with the shard, so a crash cannot separate the rows from it."""
        if data is None:
            if embeddings is None:
                raise ValueError("pass data, embeddings or both")
            table = pa.table({"_": pa.nulls(len(embeddings))}).drop_columns(["_"])  # no columns
        else:
            table = validate.to_table(data)
        if table.num_rows == 0:
            raise ValueError("data has no rows")
        validate.check_column_names(table)
        validate.check_cell_sizes(table)
        self._refresh()  # a deleted dataset refuses data
        with locked(self._paths.lock):
            prune_superseded(self._paths)
            meta = self._refresh()
            if source is not None and source in ingested_sources(self._paths):
                return 0
            id_field = meta["id_field"]
            generated = id_field == validate.GENERATED_ID_FIELD
            info: dict[str, Any] = {"source_sha256": source} if source else {}
            if generated:
                if id_field in table.column_names:
                    raise ValueError(
                        f"column {id_field!r} is reserved for generated ids: open the dataset "
                        f"with unique_id_field={id_field!r} to supply your own"
                    )
                start = next_generated_id(self._paths, meta)
                ids = [_short_id(start + i) for i in range(table.num_rows)]
                table = table.add_column(0, id_field, pa.array(ids, pa.string()))
                info["next_generated_id"] = start + table.num_rows
            table = validate.string_ids(table, id_field)
            validate.check_schema(table.schema, shard_schema(self._paths))
            stored = read_shards(self._paths, [id_field])
            if stored is not None:
                validate.check_new_ids(
                    table.column(id_field), set(stored.column(id_field).to_pylist()), id_field
                )
            stored_dim = stored_embedding_dim(self._paths)
            vectors = None
            if embeddings is not None:
                if stored is not None and stored_dim is None:
                    raise ValueError(
                        "this dataset's earlier batches had no embeddings; add this one without"
                    )
                vectors = validate.check_embeddings(embeddings, table.num_rows, stored_dim)
            elif stored_dim is not None:
                raise ValueError(
                    "this dataset was created with embeddings: pass embeddings= for every batch"
                )
            self._meta = store_meta(self._paths, meta)
            write_shard(self._paths, table, vectors, info)
        return table.num_rows

    def delete_data(self, ids: Any) -> int:
        """Remove the datums with these ids (Nomic's ``delete_data(ids=...)``); returns how many.

        The way out when a batch got in that should not have: the ids become free to add again
        and the next ``create_index`` rebuilds the map without them. Unknown ids raise a
        ``KeyError`` listing them, and nothing is removed. Generated ids are never reused.
        """
        keys = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        if not keys:
            raise ValueError("delete_data needs at least one id")
        with locked(self._paths.lock):
            prune_superseded(self._paths)
            meta = self._refresh()
            stored = read_shards(self._paths, [meta["id_field"]])
            known = set() if stored is None else set(stored.column(meta["id_field"]).to_pylist())
            missing = [k for k in keys if k not in known]
            if missing:
                raise KeyError(f"{len(missing)} unknown ids, nothing deleted: {missing[:10]}")
            if meta["id_field"] == validate.GENERATED_ID_FIELD:
                update_meta(self._paths, next_generated_id=next_generated_id(self._paths, meta))
            return delete_rows(self._paths, meta["id_field"], set(keys))

    def create_index(
        self,
        name: str | None = None,
        indexed_field: str | None = None,
        modality: str | None = None,
        projection: Any = None,
        topic_model: Any = True,
        duplicate_detection: Any = True,
        embedding_model: Any = None,
        reuse_embeddings_from_index: str | None = None,
    ) -> AtlasMap:
        """Record the index configuration and build the map through Dagster; return the map.

        The hosted client's signature, argument for argument. Unlike the hosted client, the
        build is synchronous: the map is ready when this returns. Calling it again with the same
        ``name`` (or none) rebuilds that map in place, keeping its tags. The run is recorded in
        the Dagster instance (``$DAGSTER_HOME``), so it shows in the Dagster UI with logs and
        lineage. Concurrent calls on one dataset (from any process) run one after the other,
        each building with its own options. Arguments as in :meth:`configure_index`.
        """
        from atlas_assets.reader.run import check_build_settings, materialize_map

        check_build_settings()  # a wrong database setting: said now, the options not recorded
        with locked(self._paths.build_lock):
            map_name = self._record_index(
                name,
                indexed_field,
                modality=modality,
                topic_model=topic_model,
                duplicate_detection=duplicate_detection,
                embedding_model=embedding_model,
                projection=projection,
                reuse_embeddings_from_index=reuse_embeddings_from_index,
            )
            materialize_map(self._paths)
            # Still under the lock: the map as this call built it, not as a next call records.
            return self.get_map(map_name)

    def rebuild_maps(self) -> list[AtlasMap]:
        """Rebuild every map with its recorded options, taking in the data added since.

        (Examples written for older hosted clients call it after ``add_data``.)
        """
        from atlas_assets.reader.run import materialize_map

        if not self.maps:
            raise ValueError(f"dataset {self.identifier!r} has no map to rebuild: create_index")
        with locked(self._paths.build_lock):
            materialize_map(self._paths)
            return self.maps

    def configure_index(
        self,
        name: str | None = None,
        indexed_field: str | None = None,
        *,
        modality: str | None = None,
        topic_model: Any = True,
        duplicate_detection: Any = True,
        embedding_model: Any = None,
        projection: Any = None,
        reuse_embeddings_from_index: str | None = None,
    ) -> str:
        """Validate and record the index configuration without building; returns the map name.

        The next run of the dataset's partition (from the UI, a sensor or a schedule) builds it.
        ``indexed_field`` is the text column to embed (kept from the current map if omitted).
        ``modality`` is ``"text"`` (embed ``indexed_field``) or ``"embedding"`` (map the
        vectors given to ``add_data``); None picks the dataset's own. The options take
        ``True``/``False``, a dict or their option model; unknown keys are a ``ValueError``, and
        so is an embedding model only the hosted service has (``nomic-embed-text-v1.5``, ...).
        ``reuse_embeddings_from_index`` is recorded only: the embedding cache already reuses
        every vector computed before. It waits for a running build of the dataset to end.
        """
        with locked(self._paths.build_lock):
            return self._record_index(
                name,
                indexed_field,
                modality=modality,
                topic_model=topic_model,
                duplicate_detection=duplicate_detection,
                embedding_model=embedding_model,
                projection=projection,
                reuse_embeddings_from_index=reuse_embeddings_from_index,
            )

    def _record_index(
        self,
        name: str | None,
        indexed_field: str | None,
        *,
        modality: str | None,
        topic_model: Any,
        duplicate_detection: Any,
        embedding_model: Any,
        projection: Any,
        reuse_embeddings_from_index: str | None,
    ) -> str:
        """:meth:`configure_index` for a caller that holds the build lock."""
        schema = shard_schema(self._paths)
        if schema is None:
            raise ValueError(f"dataset {self.identifier!r} has no data: call add_data first")
        has_vectors = stored_embedding_dim(self._paths) is not None
        if modality not in (None, "text", "embedding"):
            raise ValueError(
                f"modality {modality!r} is not supported: use 'text' or 'embedding' (images "
                "are not supported)"
            )
        if modality == "embedding" and not has_vectors:
            raise ValueError(
                f"modality='embedding' needs vectors: dataset {self.identifier!r} was added "
                "without embeddings= (use modality='text' with an indexed_field)"
            )
        if modality == "text" and has_vectors:
            raise ValueError(
                f"dataset {self.identifier!r} holds uploaded embeddings, and its map is built "
                "from them: use modality='embedding' (or leave modality out)"
            )
        current_maps = self._refresh().get("maps", [])
        if indexed_field is None and current_maps:  # a rebuild keeps the indexed field
            indexed_field = current_maps[0]["indexed_field"]
        if indexed_field is None and not has_vectors:
            raise ValueError("indexed_field is required: the text column to embed")
        if indexed_field is not None:
            if indexed_field not in schema.names:
                raise ValueError(
                    f"indexed_field {indexed_field!r} is not a column; columns are {schema.names}"
                )
            # Stored text is plain strings: lib.validate casts large and dictionary ones.
            if not pa.types.is_string(schema.field(indexed_field).type):
                raise ValueError(
                    f"indexed_field {indexed_field!r} must be a text column, "
                    f"got {schema.field(indexed_field).type}"
                )
        if isinstance(embedding_model, str):
            embedding_model = {"model": embedding_model}
        embed_opts = coerce_options(
            NomicEmbedOptions, embedding_model or True, argument="embedding_model"
        )
        if not has_vectors:  # uploaded vectors are mapped as they are: no model runs
            check_local_model(embed_opts.model)
        dup_opts = coerce_options(
            NomicDuplicatesOptions, duplicate_detection, argument="duplicate_detection"
        )
        keep_field = dup_opts.keep.partition(":")[2] if dup_opts else ""
        if keep_field and keep_field not in schema.names:
            raise ValueError(
                f"duplicate_detection keep={dup_opts.keep!r}: no column {keep_field!r}"
            )
        if dup_opts and dup_opts.keep == "longest" and indexed_field is None:
            raise ValueError("duplicate_detection keep='longest' needs an indexed_field")
        config = {
            "indexed_field": indexed_field,
            "embedding": embed_opts.model_dump(),
            "projection": coerce_options(
                NomicProjectOptions, projection or True, argument="projection"
            ).model_dump(),
            "topic_model": _dump(
                coerce_options(NomicTopicOptions, topic_model, argument="topic_model")
            ),
            "duplicate_detection": _dump(dup_opts),
            "modality": "embedding" if has_vectors else "text",
            "reuse_embeddings_from_index": reuse_embeddings_from_index,
        }
        with locked(self._paths.lock):
            maps = self._refresh().get("maps", [])
            current = maps[0] if maps else None
            map_name = name or (current["name"] if current else self.slug)
            if current and _same_slug(current["name"], map_name):
                map_name = current["name"]  # "My Map" and "my-map" name the same map
            if current and current["name"] != map_name:
                raise ValueError(
                    f"dataset {self.identifier!r} already has map {current['name']!r}; one map per "
                    "dataset is supported: call create_index with that name (or none) to rebuild it"
                )
            entry = {
                "name": map_name,
                "id": current["id"] if current else f"{self.id}-map",
                "created_timestamp": current["created_timestamp"] if current else now_iso(),
                "updated_timestamp": now_iso(),
                **config,
            }
            update_meta(self._paths, maps=[entry])
        return map_name

    def bind_source(self, pattern: str) -> None:
        """Bind the dataset to a file or glob (CSV, Parquet, JSONL) that the refresh schedule
        re-reads: rows with ids not yet stored are appended; stored rows are kept as they are.

        Needs the dataset's own ``unique_id_field``, since generated ids cannot tell new rows
        from old. ``~`` and relative paths are resolved now.
        """
        from glob import glob
        from pathlib import Path

        if self.id_field == validate.GENERATED_ID_FIELD:
            raise ValueError("a bound source needs unique_id_field: open the dataset with one")
        resolved = str(Path(pattern).expanduser().resolve())
        if not glob(resolved):
            raise ValueError(f"no file matches {pattern!r}")
        with locked(self._paths.lock):
            self._meta = store_meta(self._paths, self._refresh())  # a bound dataset exists
            update_meta(self._paths, source={"glob": resolved})
        self._refresh()

    def delete(self) -> None:
        """Delete the dataset, irreversibly: its folder (data, map resources, tags), and its
        partition in the Dagster instance if it has one. The embedding cache, shared by every
        dataset, keeps its vectors. Waits for a running build of the dataset to end first.
        """
        self._refresh()
        from atlas_assets.store.tags import tag_store

        with locked(self._paths.build_lock), locked(self._paths.lock):
            # Tags first: a shared tag database that cannot be reached leaves the dataset whole.
            tag_store(self._paths).drop()
            remove_tree(self._paths.root)  # and its objects, on a remote store
        from atlas_assets.reader.run import forget_partition

        forget_partition(self._paths)
        self._deleted = True

    # -- reading ---------------------------------------------------------------------------
    def get_data(self, ids: list[str]) -> list[dict[str, Any]]:
        """Rows for ``ids``, in their order; unknown ids raise a ``KeyError`` listing them."""
        table = read_shards(self._paths)
        if table is None:
            raise KeyError(
                f"dataset {self.identifier!r} has no data; unknown ids: {list(ids)[:10]}"
            )
        keys = [str(i) for i in ids]
        position = {v: i for i, v in enumerate(table.column(self.id_field).to_pylist())}
        missing = [k for k in keys if k not in position]
        if missing:
            raise KeyError(f"{len(missing)} unknown ids: {missing[:10]}")
        columns = [c for c in table.column_names if not c.startswith("_")]
        rows = table.select(columns).take(pa.array([position[k] for k in keys], pa.int64()))
        return rows.to_pylist()


def _same_slug(a: str, b: str) -> bool:
    from atlas_assets.store import slugify

    return slugify(a) == slugify(b) != ""


def _identifier_of(dataset_id: str) -> str:
    """The identifier of the stored dataset whose ``id`` is ``dataset_id``."""
    for paths in list_datasets():
        if (load_meta(paths) or {}).get("id") == dataset_id:
            return paths.identifier
    raise ValueError(f"no dataset with dataset_id {dataset_id!r} in the store")


def _dump(options: Any) -> dict[str, Any] | None:
    return None if options is None else options.model_dump()
