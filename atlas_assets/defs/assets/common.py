"""What every map-resource asset shares: its decorator settings, version-checked inputs and the
steps around its computation (:class:`Build`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

import dagster as dg
import pyarrow as pa

from atlas_assets.defs.partitions import atlas_datasets
from atlas_assets.defs.reporting import table_metadata
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.store import (
    DatasetPaths,
    ResourceNotReadyError,
    StaleResourceError,
    read_resource,
    resource_info,
)

ASSET_DEFAULTS: dict[str, Any] = {
    "partitions_def": atlas_datasets,
    "group_name": "atlas_map",
}

_T = TypeVar("_T")


def dataset_version(paths: DatasetPaths) -> str:
    """The version of the materialized ``dataset`` resource every other resource derives from."""
    info = resource_info(paths.resource("dataset"))
    if info is None:
        raise dg.Failure(f"dataset {paths.identifier!r}: materialize the 'dataset' asset first")
    return info["dataset_version"]


def read_input(
    paths: DatasetPaths,
    name: str,
    version: str,
    read: Callable[..., _T] = read_resource,
) -> _T:
    """An upstream resource at ``version``, read by ``read`` (a typed reader of
    :mod:`atlas_assets.store.resources`, or the whole table), or a failure naming the asset to
    materialize."""
    try:
        return read(paths.resource(name), expected_version=version)
    except ResourceNotReadyError:
        raise dg.Failure(f"{paths.identifier}: materialize the {name!r} asset first") from None
    except StaleResourceError as err:
        raise dg.Failure(f"{paths.identifier}: {err}; re-materialize {name!r}") from None


def data_version(version: str, params: dict[str, Any]) -> dg.DataVersion:
    """A data version from the dataset version and the parameters a resource was built with."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
    return dg.DataVersion(f"{version}-{digest[:8]}")


@dataclass(frozen=True)
class Build:
    """One materialization of a map resource: where it reads and writes, the dataset version
    it derives from, and its clock. An asset body is then read, compute, write::

        build = Build.start(context, store)
        ids = build.read("latent", read_ids)
        graph = ...  # a lib call
        write_knn(build.output("knn_graph"), ids, graph, **build.lineage(params))
        return build.result(ids, params=params)
    """

    paths: DatasetPaths
    version: str
    started: float = field(default_factory=perf_counter)

    @classmethod
    def start(cls, context: dg.AssetExecutionContext, store: AtlasStore) -> Build:
        """The build of ``context``'s partition, at its materialized dataset's version."""
        started = perf_counter()
        paths = store.paths(context.partition_key)
        return cls(paths, dataset_version(paths), started)

    def read(self, name: str, read: Callable[..., _T] = read_resource) -> _T:
        """An upstream resource at this build's version (:func:`read_input`)."""
        return read_input(self.paths, name, self.version, read)

    def previous(self, name: str) -> pa.Table | None:
        """The resource of the map published before this build (None if it has none): what a
        rebuild reports its changes against."""
        path = self.paths.resource(name)
        return read_resource(path) if path.is_file() else None

    def output(self, name: str, part: str | None = None) -> Path:
        """Where this build writes a resource (or one of its parts)."""
        return self.paths.output(name, part)

    def lineage(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """The keyword arguments every resource writer takes: dataset version and parameters."""
        return {"dataset_version": self.version, "params": params}

    def seconds(self) -> float:
        return perf_counter() - self.started

    def result(
        self,
        table: pa.Table,
        *,
        params: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        version: dg.DataVersion | None = None,
        asset_key: str | None = None,
        seconds: float | None = None,
    ) -> dg.MaterializeResult:
        """The materialization: ``table``'s row count, schema and preview, the time so far (or
        ``seconds``), ``params`` and ``metadata``; its data version derives from the dataset
        version and ``params`` unless ``version`` is given."""
        if version is None:
            version = data_version(self.version, params or {})
        return dg.MaterializeResult(
            asset_key=asset_key,
            metadata={
                **table_metadata(
                    table, seconds=self.seconds() if seconds is None else seconds, params=params
                ),
                **(metadata or {}),
            },
            data_version=version,
        )

    def disabled(self, name: str) -> dg.MaterializeResult:
        """The map's configuration turned this resource off: no file, and says so."""
        self.paths.drop(name)
        return dg.MaterializeResult(asset_key=name, metadata={"enabled": False})
