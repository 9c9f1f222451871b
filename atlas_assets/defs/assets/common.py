"""What every map-resource asset shares: its decorator settings and version-checked inputs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from atlas_assets.defs.partitions import atlas_datasets
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


def dataset_version(paths: DatasetPaths) -> str:
    """The version of the materialized ``dataset`` resource every other resource derives from."""
    info = resource_info(paths.resource("dataset"))
    if info is None:
        raise dg.Failure(f"dataset {paths.identifier!r}: materialize the 'dataset' asset first")
    return info["dataset_version"]


_T = TypeVar("_T")


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
