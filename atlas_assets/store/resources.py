"""Each map resource's schema: its column names and typed functions that write and read it.

The assets that write a resource, the checks, the reader and the explorer all name its columns
through this module, so a column is spelled in one place. Every per-datum resource starts with
the dataset's id column (``ids``: a one-column table, name and values), in dataset order.
Underneath are :func:`~atlas_assets.store.files.write_resource` and
:func:`~atlas_assets.store.files.read_resource` (atomic, versioned Arrow files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atlas_assets.lib.graph import KnnGraph
from atlas_assets.store.files import (
    fixed_list,
    matrix,
    private_matrix,
    read_resource,
    write_resource,
)

# latent: [id, embedding] with one float32 unit vector per datum
EMBEDDING = "embedding"
# knn_graph: [id, neighbors, distances], each row's k nearest other rows, nearest first
NEIGHBORS, DISTANCES = "neighbors", "distances"
# projected: [id, x, y], float32
X, Y = "x", "y"
# duplicates: [id, duplicate_class, cluster_id]; its ``pairs`` part: [<id>_a, <id>_b, distance]
DUPLICATE_CLASS, CLUSTER_ID, PAIR_DISTANCE = "duplicate_class", "cluster_id", "distance"
DUPLICATE_CLASSES = ("singleton", "retention candidate", "deletion candidate")
SINGLETON, RETENTION, DELETION = DUPLICATE_CLASSES
# topics: [id, topic_depth_1, ..., topic_depth_D]; metadata names each topic's path the same way
TOPIC_COLUMN_PREFIX = "topic_depth_"


def topic_column(depth: int) -> str:
    """The column of each datum's (or topic's) label at ``depth`` (1 is the top)."""
    return f"{TOPIC_COLUMN_PREFIX}{depth}"


def _write(
    path: Path,
    table: pa.Table,
    resource: str,
    dataset_version: str,
    params: dict[str, Any] | None,
) -> pa.Table:
    write_resource(path, table, resource=resource, dataset_version=dataset_version, params=params)
    return table


def read_ids(path: Path, *, expected_version: str | None = None) -> pa.Table:
    """The id column of a per-datum resource, as a one-column table (memory-mapped)."""
    return read_resource(path, expected_version=expected_version).select([0])


def write_latent(
    path: Path,
    ids: pa.Table,
    vectors: np.ndarray,
    *,
    dataset_version: str,
    params: dict[str, Any] | None = None,
) -> pa.Table:
    """Write the ``latent`` resource, ``(N, d)`` vectors beside their ids; returns the table."""
    table = ids.append_column(EMBEDDING, fixed_list(vectors))
    return _write(path, table, "latent", dataset_version, params)


def read_latent(
    path: Path, *, expected_version: str | None = None, writable: bool = False
) -> np.ndarray:
    """The latent vectors as an ``(N, d)`` float32 array over the memory-mapped file.

    Read-only by default (what the pipeline hands its algorithms); ``writable=True`` maps the
    file copy-on-write (:func:`~atlas_assets.store.files.private_matrix`), so in-place changes
    copy only the pages they touch and never reach the file.
    """
    if writable:
        return private_matrix(path, EMBEDDING, expected_version=expected_version)
    return latent_vectors(read_resource(path, expected_version=expected_version))


def latent_vectors(table: pa.Table) -> np.ndarray:
    """The vectors of a ``latent`` table already read, as a read-only ``(N, d)`` view."""
    return matrix(table.column(EMBEDDING))


def write_knn(
    path: Path,
    ids: pa.Table,
    graph: KnnGraph,
    *,
    dataset_version: str,
    params: dict[str, Any] | None = None,
) -> pa.Table:
    """Write the ``knn_graph`` resource; returns the table."""
    table = ids.append_column(NEIGHBORS, fixed_list(graph.indices)).append_column(
        DISTANCES, fixed_list(graph.distances)
    )
    return _write(path, table, "knn_graph", dataset_version, params)


def read_knn(path: Path, *, expected_version: str | None = None) -> KnnGraph:
    """The kNN graph stored by the ``knn_graph`` asset (zero-copy views of the file)."""
    table = read_resource(path, expected_version=expected_version)
    return KnnGraph(matrix(table.column(NEIGHBORS)), matrix(table.column(DISTANCES)))


def write_projected(
    path: Path,
    ids: pa.Table,
    coords: np.ndarray,
    *,
    dataset_version: str,
    params: dict[str, Any] | None = None,
) -> pa.Table:
    """Write the ``projected`` resource from ``(N, 2)`` positions; returns the table."""
    table = ids.append_column(X, pa.array(np.ascontiguousarray(coords[:, 0]))).append_column(
        Y, pa.array(np.ascontiguousarray(coords[:, 1]))
    )
    return _write(path, table, "projected", dataset_version, params)


def read_projected(path: Path, *, expected_version: str | None = None) -> np.ndarray:
    """The 2-D positions as an ``(N, 2)`` array."""
    return projected_coords(read_resource(path, expected_version=expected_version))


def projected_coords(table: pa.Table) -> np.ndarray:
    """The positions of a ``projected`` table already read, as an ``(N, 2)`` array."""
    return np.column_stack([table.column(X).to_numpy(), table.column(Y).to_numpy()])


def duplicates_table(
    ids: pa.Table, duplicate_class: np.ndarray, cluster_id: np.ndarray
) -> pa.Table:
    """The ``duplicates`` table: each datum's class (one of ``DUPLICATE_CLASSES``) and cluster."""
    return ids.append_column(
        DUPLICATE_CLASS, pa.array(np.asarray(duplicate_class).astype(str))
    ).append_column(CLUSTER_ID, pa.array(cluster_id, pa.int64()))


def duplicate_pairs_table(
    ids: pa.Table, i: np.ndarray, j: np.ndarray, distance: np.ndarray
) -> pa.Table:
    """The ``duplicates`` resource's ``pairs`` part: rows ``i``, ``j`` named by their ids."""
    id_field, values = ids.column_names[0], ids.column(0)
    return pa.table(
        {
            f"{id_field}_a": values.take(pa.array(np.asarray(i, np.int64))),
            f"{id_field}_b": values.take(pa.array(np.asarray(j, np.int64))),
            PAIR_DISTANCE: pa.array(np.asarray(distance, np.float32)),
        }
    )


def write_duplicates(
    path: Path,
    pairs_path: Path,
    table: pa.Table,
    pairs: pa.Table,
    *,
    dataset_version: str,
    params: dict[str, Any] | None = None,
) -> None:
    """Write the ``duplicates`` resource and its ``pairs`` part (the pairs first)."""
    _write(pairs_path, pairs, "duplicates", dataset_version, params)
    _write(path, table, "duplicates", dataset_version, params)


def deletion_candidates(table: pa.Table) -> list[Any]:
    """Ids of a ``duplicates`` table's deletion candidates, in dataset order."""
    return table.column(0).filter(pc.equal(table.column(DUPLICATE_CLASS), DELETION)).to_pylist()
