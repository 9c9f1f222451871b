from time import perf_counter

import dagster as dg
import pyarrow as pa

from atlas_assets.defs.assets.common import (
    ASSET_DEFAULTS,
    data_version,
    dataset_version,
    read_input,
)
from atlas_assets.defs.reporting import png_markdown, table_metadata
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.lib.diff import label_changes
from atlas_assets.lib.duplicates import find_duplicates, keep_priority
from atlas_assets.lib.plot import histogram_png
from atlas_assets.store import read_resource
from atlas_assets.store.datasets import index_config
from atlas_assets.store.resources import (
    DUPLICATE_CLASS,
    duplicate_pairs_table,
    duplicates_table,
    read_knn,
    read_latent,
    write_duplicates,
)


@dg.asset(
    deps=["dataset", "latent", "knn_graph"],
    kinds={"python", "faiss", "arrow"},
    code_version="duplicates-v1",
    **ASSET_DEFAULTS,
)
def duplicates(context: dg.AssetExecutionContext, store: AtlasStore) -> dg.MaterializeResult:
    """Semantic duplicate clusters: ``[id, duplicate_class, cluster_id]`` in dataset order.

    Pairs of datums whose normalised latent vectors lie within ``duplicate_cutoff`` cosine
    distance are joined into clusters (connected components). Each cluster of two or more keeps
    one "retention candidate" by the keep rule (default: first in upload order) and marks the
    rest "deletion candidate"; every other datum is a "singleton" with a cluster of its own.
    The pairs and their distances are kept beside it (``duplicates.pairs()``).
    """
    start = perf_counter()
    paths = store.paths(context.partition_key)
    version = dataset_version(paths)
    config = index_config(paths)
    options = config.duplicate_detection
    if options is None:
        paths.drop("duplicates")
        return dg.MaterializeResult(metadata={"enabled": False})
    data = read_input(paths, "dataset", version)
    latent = read_input(paths, "latent", version, read_latent)
    knn = read_input(paths, "knn_graph", version, read_knn)
    field = config.indexed_field
    texts = data.column(field).cast(pa.string()).fill_null("").to_pylist() if field else None
    fields = data.to_pandas() if ":" in options.keep else None  # only field rules need them
    priority = keep_priority(options.keep, texts=texts, fields=fields, n=data.num_rows)
    result = find_duplicates(latent, options.duplicate_cutoff, knn=knn, priority=priority)

    id_field = data.column_names[0]
    ids = data.select([0])
    table = duplicates_table(ids, result.duplicate_class, result.cluster_id)
    pairs = duplicate_pairs_table(
        ids, result.pairs["i"], result.pairs["j"], result.pairs["distance"]
    )
    previous = paths.resource("duplicates")
    before = read_resource(previous).to_pandas() if previous.is_file() else None
    params = options.model_dump()
    write_duplicates(
        paths.output("duplicates"),
        paths.output("duplicates", "pairs"),
        table,
        pairs,
        dataset_version=version,
        params=params,
    )
    meta = {
        **table_metadata(table, seconds=perf_counter() - start, params=params),
        "deletion_candidates": result.n_deletion,
        "clusters": result.n_clusters,
        "pairs": len(pairs),
        "nearest_neighbour_distances": png_markdown(
            histogram_png(
                knn.distances[:, 0],
                marker=options.duplicate_cutoff,
                title="distance to nearest neighbour",
            ),
            alt="histogram",
        ),
    }
    if before is not None:
        meta["changed_class"] = label_changes(
            before[id_field],
            before[DUPLICATE_CLASS],
            ids.column(0).to_pylist(),
            result.duplicate_class,
        )["changed"]
    context.log.info(f"{result.n_deletion} deletion candidates in {result.n_clusters} clusters")
    return dg.MaterializeResult(metadata=meta, data_version=data_version(version, params))
