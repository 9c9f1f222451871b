from time import perf_counter

import dagster as dg

from atlas_assets.defs.assets.common import (
    ASSET_DEFAULTS,
    data_version,
    dataset_version,
    read_input,
)
from atlas_assets.defs.reporting import table_metadata
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.store.datasets import index_config
from atlas_assets.store.resources import read_ids, read_latent, write_knn

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
    ids = read_input(paths, "latent", version, read_ids)
    projection = index_config(paths).projection
    k = max(MIN_NEIGHBORS, projection.umap_params()["n_neighbors"] - 1)
    graph = build_knn_graph(read_input(paths, "latent", version, read_latent), k)
    params = {"k": k}
    write_knn(paths.output("knn_graph"), ids, graph, dataset_version=version, params=params)
    return dg.MaterializeResult(
        metadata={**table_metadata(ids, seconds=perf_counter() - start, params=params)},
        data_version=data_version(version, params),
    )
