import dagster as dg

from atlas_assets.defs.assets.common import ASSET_DEFAULTS, Build
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.store.datasets import index_config
from atlas_assets.store.resources import read_ids, read_latent, write_knn

# Neighbours kept per datum: enough for UMAP, duplicate search and topic posteriors alike.
MIN_NEIGHBORS = 30


@dg.asset(
    deps=["latent"], kinds={"python", "faiss", "arrow"}, code_version="knn-v5", **ASSET_DEFAULTS
)
def knn_graph(context: dg.AssetExecutionContext, store: AtlasStore) -> dg.MaterializeResult:
    """The shared k-nearest-neighbour graph of the latent vectors (cosine distance).

    Computed once and reused by the projection, duplicate search and topic clustering. Exact
    up to 50k rows on a CPU with bfloat16 in hardware (10k elsewhere, then a search of nearby
    k-means cells to 50k), HNSW beyond.
    """
    # Imported here: numba compiles on import, and the definitions load on every UI reload.
    from atlas_assets.lib.knn import knn_graph as build_knn_graph

    build = Build.start(context, store)
    ids = build.read("latent", read_ids)
    projection = index_config(build.paths).projection
    k = max(MIN_NEIGHBORS, projection.umap_params()["n_neighbors"] - 1)
    graph = build_knn_graph(build.read("latent", read_latent), k)
    params = {"k": k}
    write_knn(build.output("knn_graph"), ids, graph, **build.lineage(params))
    return build.result(ids, params=params)
