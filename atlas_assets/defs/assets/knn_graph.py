from time import perf_counter

import dagster as dg
import pyarrow as pa

from atlas_assets.defs.assets.common import (
    ASSET_DEFAULTS,
    data_version,
    dataset_version,
    read_input,
)
from atlas_assets.defs.reporting import table_metadata
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.options import NomicProjectOptions
from atlas_assets.store import write_resource
from atlas_assets.store.datasets import map_config
from atlas_assets.store.files import fixed_list, matrix

# Neighbours kept per datum: enough for UMAP, duplicate search and topic posteriors alike.
MIN_NEIGHBORS = 30


@dg.asset(
    deps=["latent"], kinds={"python", "faiss", "arrow"}, code_version="knn-v3", **ASSET_DEFAULTS
)
def knn_graph(context: dg.AssetExecutionContext, store: AtlasStore) -> dg.MaterializeResult:
    """The shared k-nearest-neighbour graph of the latent vectors (cosine distance).

    Computed once and reused by the projection, duplicate search and topic clustering. Exact
    up to 50k rows on a CPU with bfloat16 in hardware (10k elsewhere, then a search of nearby
    k-means cells to 50k), HNSW beyond.
    """
    # Imported here: numba compiles on import, and the definitions load on every UI reload.
    from atlas_assets.lib.knn import knn_graph as build_knn_graph

    start = perf_counter()
    paths = store.paths(context.partition_key)
    version = dataset_version(paths)
    latent = read_input(paths, "latent", version)
    projection = NomicProjectOptions(**(map_config(paths).get("projection") or {}))
    k = max(MIN_NEIGHBORS, projection.umap_params()["n_neighbors"] - 1)
    graph = build_knn_graph(matrix(latent.column("embedding")), k)
    id_field = latent.column_names[0]
    table = pa.table(
        {
            id_field: latent.column(id_field),
            "neighbors": fixed_list(graph.indices),
            "distances": fixed_list(graph.distances),
        }
    )
    params = {"k": k}
    write_resource(
        paths.output("knn_graph"),
        table,
        resource="knn_graph",
        dataset_version=version,
        params=params,
    )
    return dg.MaterializeResult(
        metadata={
            **table_metadata(
                table.select([id_field]), seconds=perf_counter() - start, params=params
            )
        },
        data_version=data_version(version, params),
    )
