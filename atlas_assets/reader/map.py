"""``AtlasMap`` and its resource accessors, over the files the Dagster assets wrote.

Reading never imports Dagster, umap or torch. A map reads the version published when it was
opened (the store's manifest, resolved once), so a rebuild running or killed meanwhile never
mixes into it; every resource is also checked against the version of its ``dataset``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from atlas_assets.options import IndexConfig
from atlas_assets.store import (
    ResourceNotReadyError,
    StaleResourceError,
    published,
    read_resource,
    resource_info,
)
from atlas_assets.store.layout import explorer_url, resource_key
from atlas_assets.store.resources import latent_vectors, read_latent

if TYPE_CHECKING:
    from atlas_assets.reader.dataset import AtlasDataset
    from atlas_assets.reader.duplicates import AtlasMapDuplicates
    from atlas_assets.reader.tags import AtlasMapTags
    from atlas_assets.reader.topics import AtlasMapTopics


class AtlasMap:
    """One map (index) of a dataset: ``data``, ``embeddings`` and the other map resources.

    The hosted client calls it ``AtlasProjection`` (an alias here).
    """

    def __init__(self, dataset: AtlasDataset, config: dict[str, Any]) -> None:
        self.dataset = dataset
        self._paths = dataset._paths
        # The published version, resolved once: every accessor of this object reads it.
        self._published = published(self._paths)
        # The configuration the published map was built with (a newer one may be recorded
        # for a rebuild that has not finished).
        self.config = self._published.config or config

    @cached_property
    def index_config(self) -> IndexConfig:
        """:attr:`config` parsed: which stages are on and with which options."""
        return IndexConfig(self.config)

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def id(self) -> str:
        return self.config["id"]

    @property
    def projection_id(self) -> str:
        """The map's id (the hosted client's projection id; ``get_map(projection_id=...)``)."""
        return self.id

    @property
    def atlas_index_id(self) -> str:
        """The id of the index this map belongs to (one map per index here)."""
        return f"{self.id}-index"

    @property
    def map_link(self) -> str:
        """Where to look at this map: the map explorer's URL for this dataset.

        The explorer must be running: ``atlas serve <dataset>`` serves it at this address
        (127.0.0.1, port 8700 unless taken). Nothing is hosted anywhere else.
        """
        return explorer_url(self._paths.partition_key)

    @property
    def dataset_link(self) -> str:
        """The same explorer URL as :attr:`map_link` (the explorer shows the dataset's map, its
        rows and tags on one page); the explorer must be running (``atlas serve``)."""
        return self.map_link

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the map's data (``map.data.tb``'s columns)."""
        return self.data.tb.schema

    def __repr__(self) -> str:
        return f"AtlasMap({self.dataset.identifier!r}, name={self.name!r})"

    def __str__(self) -> str:
        return f"{self.name}: {self.dataset_link}"

    @cached_property
    def version(self) -> str:
        """The dataset version this map serves (that of its materialized ``dataset`` resource)."""
        info = self.info("dataset")
        if info is None:
            raise self.not_ready("dataset")
        return info["dataset_version"]

    def info(self, resource: str) -> dict[str, Any] | None:
        """The lineage recorded in a resource of this map (dataset version, parameters), or
        None if the map has no such resource."""
        return resource_info(self._published.path(resource_key(resource)))

    def not_ready(self, resource: str) -> ResourceNotReadyError:
        ident = self.dataset.identifier
        return ResourceNotReadyError(
            f"map resource {resource!r} of dataset {ident!r} is not materialized: run "
            f"`atlas index {ident}` (or materialize the {resource!r} asset of partition "
            f"{self._paths.partition_key!r} in the Dagster UI)"
        )

    def path(self, resource: str, part: str | None = None) -> Path:
        """The file of a resource (or one of its parts) in the version this map serves."""
        key = resource_key(resource, part)
        if key not in self._published.resources:
            raise self.not_ready(resource)
        path = self._published.path(key)
        if not path.is_file():  # removed a grace period after a newer map was published
            raise StaleResourceError(
                f"map resource {key!r} of dataset {self.dataset.identifier!r} was replaced by a "
                "newer build since this map was opened: open the map again (dataset.maps[0])"
            )
        return path

    def read(self, resource: str, part: str | None = None) -> pa.Table:
        """A resource table (or one of its parts), memory-mapped, at this map's version."""
        return read_resource(self.path(resource, part), expected_version=self.version)

    @cached_property
    def data(self) -> AtlasMapData:
        return AtlasMapData(self)

    @cached_property
    def embeddings(self) -> AtlasMapEmbeddings:
        return AtlasMapEmbeddings(self)

    @cached_property
    def topics(self) -> AtlasMapTopics:
        from atlas_assets.reader.topics import AtlasMapTopics

        return AtlasMapTopics(self)

    @cached_property
    def duplicates(self) -> AtlasMapDuplicates:
        from atlas_assets.reader.duplicates import AtlasMapDuplicates

        return AtlasMapDuplicates(self)

    @cached_property
    def tags(self) -> AtlasMapTags:
        from atlas_assets.reader.tags import AtlasMapTags

        return AtlasMapTags(self)


class AtlasMapData:
    """The uploaded columns of every datum on the map (no internal ``_`` columns)."""

    def __init__(self, atlas_map: AtlasMap) -> None:
        self._map = atlas_map

    @cached_property
    def tb(self) -> pa.Table:
        """Arrow table, memory-mapped from the store: the cheapest way to read the data."""
        return self._map.read("dataset")

    @property
    def df(self) -> pd.DataFrame:
        """The data as a pandas DataFrame (materializes it in memory)."""
        return self.tb.to_pandas()

    def __repr__(self) -> str:
        return f"AtlasMapData({self.tb.num_rows} rows, columns={self.tb.column_names})"


class AtlasMapEmbeddings:
    """Latent (high-dimensional) and projected (2-D) embeddings of the datums."""

    def __init__(self, atlas_map: AtlasMap) -> None:
        self._map = atlas_map

    @cached_property
    def _latent_table(self) -> pa.Table:
        return self._map.read("latent")

    @property
    def latent(self) -> np.ndarray:
        """``(N, d)`` float32 unit vectors: a writable, copy-on-write memory map of the stored file.

        Opening it costs O(1) whatever N (nothing is read until used). You may change it in
        place (``latent /= norms``, ``faiss.normalize_L2(latent)``): only the pages you touch
        are copied, in your process's memory; the stored file never changes, and each access
        (or a new session) returns the stored values again. (The hosted client's docs say
        memory-mapped, but it downloads a fresh copy on every access.)
        """
        path = self._map.path("latent")
        return read_latent(path, expected_version=self._map.version, writable=True)

    @cached_property
    def _latent(self) -> np.ndarray:
        """The read-only stored vectors the searches use, whatever a user does to ``latent``."""
        return latent_vectors(self._latent_table)

    @cached_property
    def tb(self) -> pa.Table:
        """The projection ``[id, x, y]`` as a memory-mapped Arrow table."""
        return self._map.read("projected")

    @property
    def df(self) -> pd.DataFrame:
        return self.tb.to_pandas()

    @property
    def projected(self) -> pd.DataFrame:
        """The 2-D map positions as a DataFrame ``[id, x, y]`` (float32)."""
        return self.df

    @cached_property
    def _ids(self) -> np.ndarray:
        return np.asarray(self._latent_table.column(0).to_pylist(), dtype=object)

    @cached_property
    def _index(self):
        from atlas_assets.lib.knn import build_index

        return build_index(self._latent)

    def vector_search(
        self, queries: np.ndarray | None = None, ids: list[str] | None = None, k: int = 5
    ) -> tuple[list[list[str]], list[list[float]]]:
        """The ``k`` nearest datums to each query vector, or to each datum in ``ids``.

        Returns ``(neighbor_ids, distances)``, one list per query, nearest first; distances are
        cosine distances. A datum searched by id is not returned as its own neighbour.
        """
        from atlas_assets.lib.embed import normalize
        from atlas_assets.lib.knn import search

        if (queries is None) == (ids is None):
            raise ValueError("pass exactly one of queries= or ids=")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        exclude: list[int | None]
        if ids is not None:
            position = {v: i for i, v in enumerate(self._ids)}
            unknown = [i for i in ids if str(i) not in position]
            if unknown:
                raise KeyError(f"{len(unknown)} unknown ids: {unknown[:10]}")
            rows = [position[str(i)] for i in ids]
            vectors, exclude = self._latent[rows], rows
        else:
            vectors = np.asarray(queries, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[1] != self._latent.shape[1]:
                raise ValueError(
                    f"queries must be a 2-D array with {self._latent.shape[1]} columns, "
                    f"got shape {vectors.shape}"
                )
            vectors, exclude = normalize(vectors), [None] * len(vectors)
        idx, dist = search(self._index, vectors, k + (ids is not None))
        neighbor_ids, distances = [], []
        for row, skip in enumerate(exclude):
            keep = [j for j in range(idx.shape[1]) if idx[row, j] >= 0 and idx[row, j] != skip][:k]
            neighbor_ids.append([str(self._ids[idx[row, j]]) for j in keep])
            distances.append([float(dist[row, j]) for j in keep])
        return neighbor_ids, distances

    def __repr__(self) -> str:
        return f"AtlasMapEmbeddings(latent={tuple(self._latent.shape)})"


AtlasProjection = AtlasMap


class AtlasIndex:
    """An index of a dataset: its indexed field and its maps (one map per index here)."""

    def __init__(self, atlas_map: AtlasMap) -> None:
        self.id = atlas_map.atlas_index_id
        self.name = atlas_map.name
        self.indexed_field = atlas_map.config.get("indexed_field")
        self.projections = [atlas_map]

    def __repr__(self) -> str:
        return f"AtlasIndex({self.name!r}, indexed_field={self.indexed_field!r})"
