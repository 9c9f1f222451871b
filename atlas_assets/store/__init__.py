"""The on-disk layout of the store: the one place that knows where every file lives.

Both the Dagster assets and the reader go through this package; nothing else builds paths.
"""

from atlas_assets.store.files import (
    ResourceNotReadyError,
    StaleResourceError,
    read_json,
    read_resource,
    resource_info,
    write_json,
    write_resource,
)
from atlas_assets.store.layout import (
    RESOURCES,
    DatasetPaths,
    atlas_home,
    dagster_home,
    dataset_paths,
    list_datasets,
    parse_identifier,
    parse_partition_key,
    partition_paths,
    slugify,
)
from atlas_assets.store.publish import (
    PublishedMap,
    RunPaths,
    SupersededError,
    bind_run,
    commit,
    published,
)

__all__ = [
    "RESOURCES",
    "DatasetPaths",
    "PublishedMap",
    "RunPaths",
    "SupersededError",
    "ResourceNotReadyError",
    "StaleResourceError",
    "atlas_home",
    "bind_run",
    "commit",
    "dagster_home",
    "dataset_paths",
    "list_datasets",
    "parse_identifier",
    "parse_partition_key",
    "partition_paths",
    "published",
    "read_json",
    "read_resource",
    "resource_info",
    "slugify",
    "write_json",
    "write_resource",
]
