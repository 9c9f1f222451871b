from time import perf_counter

import dagster as dg
import numpy as np
import pyarrow as pa

from atlas_assets.defs import refresh
from atlas_assets.defs.assets.common import (
    ASSET_DEFAULTS,
    data_version,
    dataset_version,
    read_input,
    read_knn,
)
from atlas_assets.defs.reporting import png_markdown, table_metadata
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.lib.diff import label_changes
from atlas_assets.lib.duplicates import find_duplicates, keep_priority
from atlas_assets.lib.plot import histogram_png
from atlas_assets.options import NomicDuplicatesOptions
from atlas_assets.store import read_resource, write_resource
from atlas_assets.store.datasets import map_config
from atlas_assets.store.files import matrix


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
    config = map_config(paths)
    if config.get("duplicate_detection") is None:
        paths.drop("duplicates")
        return dg.MaterializeResult(metadata={"enabled": False})
    options = NomicDuplicatesOptions(**config["duplicate_detection"])
    data = read_input(paths, "dataset", version)
    latent = matrix(read_input(paths, "latent", version).column("embedding"))
    knn = read_knn(read_input(paths, "knn_graph", version))
    field = config.get("indexed_field")
    texts = data.column(field).cast(pa.string()).fill_null("").to_pylist() if field else None
    fields = data.to_pandas() if ":" in options.keep else None  # only field rules need them
    priority = keep_priority(options.keep, texts=texts, fields=fields, n=data.num_rows)
    result = find_duplicates(latent, options.duplicate_cutoff, knn=knn, priority=priority)

    id_field = data.column_names[0]
    ids = data.column(id_field)
    cluster_id = result.cluster_id
    if not refresh.fresh_requested(context):  # unchanged clusters keep their ids
        cluster_id = refresh.carried_clusters(paths, ids.to_pylist(), cluster_id)
    table = pa.table(
        {
            id_field: ids,
            "duplicate_class": pa.array(result.duplicate_class.astype(str)),
            "cluster_id": pa.array(cluster_id, pa.int64()),
        }
    )
    pairs = pa.table(
        {
            f"{id_field}_a": ids.take(pa.array(result.pairs["i"].to_numpy(np.int64))),
            f"{id_field}_b": ids.take(pa.array(result.pairs["j"].to_numpy(np.int64))),
            "distance": pa.array(result.pairs["distance"].to_numpy(np.float32)),
        }
    )
    previous = paths.resource("duplicates")
    before = read_resource(previous).to_pandas() if previous.is_file() else None
    params = options.model_dump()
    write_resource(
        paths.output("duplicates", "pairs"),
        pairs,
        resource="duplicates",
        dataset_version=version,
        params=params,
    )
    write_resource(
        paths.output("duplicates"),
        table,
        resource="duplicates",
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
            before["duplicate_class"],
            ids.to_pylist(),
            result.duplicate_class,
        )["changed"]
    context.log.info(f"{result.n_deletion} deletion candidates in {result.n_clusters} clusters")
    return dg.MaterializeResult(metadata=meta, data_version=data_version(version, params))
