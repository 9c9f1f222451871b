import dagster as dg
import pyarrow as pa

from atlas_assets.defs.assets.common import ASSET_DEFAULTS, Build
from atlas_assets.defs.reporting import png_markdown
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.lib.diff import label_changes
from atlas_assets.lib.duplicates import find_duplicates, keep_priority
from atlas_assets.lib.plot import histogram_png
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
    build = Build.start(context, store)
    config = index_config(build.paths)
    options = config.duplicate_detection
    if options is None:
        return build.disabled("duplicates")
    data = build.read("dataset")
    latent = build.read("latent", read_latent)
    knn = build.read("knn_graph", read_knn)
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
    before = build.previous("duplicates")
    params = options.model_dump()
    write_duplicates(
        build.output("duplicates"),
        build.output("duplicates", "pairs"),
        table,
        pairs,
        **build.lineage(params),
    )
    seconds = build.seconds()
    meta = {
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
        before = before.to_pandas()
        meta["changed_class"] = label_changes(
            before[id_field],
            before[DUPLICATE_CLASS],
            ids.column(0).to_pylist(),
            result.duplicate_class,
        )["changed"]
    context.log.info(f"{result.n_deletion} deletion candidates in {result.n_clusters} clusters")
    return build.result(table, params=params, metadata=meta, seconds=seconds)
