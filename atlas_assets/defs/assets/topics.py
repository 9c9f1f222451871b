from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pyarrow as pa

from atlas_assets.defs.assets.common import ASSET_DEFAULTS, Build
from atlas_assets.defs.reporting import png_markdown
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.lib.diff import label_changes
from atlas_assets.lib.plot import map_png
from atlas_assets.lib.topic_tables import datum_labels, hierarchy_table, topic_metadata
from atlas_assets.options import NomicEmbedOptions
from atlas_assets.store import resource_info, write_resource
from atlas_assets.store.datasets import index_config
from atlas_assets.store.resources import read_knn, read_latent, read_projected

if TYPE_CHECKING:
    from atlas_assets.lib.topics import Encoder

TOPIC_RESOURCES = ("topics", "metadata", "hierarchy")
_SPEC = {
    "deps": ["dataset", "latent", "knn_graph", "projected"],
    "group_name": ASSET_DEFAULTS["group_name"],
    "kinds": {"python", "igraph", "arrow"},
    "code_version": "topics-v2",
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "topics",
            description="Each datum's topic label at every depth: "
            "[id, topic_depth_1, ..., topic_depth_D], in dataset order.",
            **_SPEC,
        ),
        dg.AssetSpec(
            "metadata",
            description="One row per topic: depth, id, keywords "
            "(topic_description) and label (topic_short_description).",
            **_SPEC,
        ),
        dg.AssetSpec(
            "hierarchy",
            description="The topic tree: every topic with its parent and size.",
            **_SPEC,
        ),
    ],
    partitions_def=ASSET_DEFAULTS["partitions_def"],
    can_subset=False,
)
def topic_model(context: dg.AssetExecutionContext, store: AtlasStore):
    """Hierarchical topics (2-3 depths): Leiden communities of the shared kNN graph, or with
    ``cluster_method="hdbscan"`` HDBSCAN over a 5-d UMAP of the latent.

    Deeper topics split within their parent, so they nest and appear as regions of the map;
    every datum has a topic at every depth (a topic that does not split carries on with its
    label). Keywords are class-based TF-IDF against sibling topics; labels pair two 1-3 word
    phrases re-ranked by similarity to the topic's centroid with the map's own model, unique
    within a depth. Topics always nest, so ``enforce_topic_hierarchy`` is recorded and always holds.
    """
    # Imported here: lib.topics needs scipy, and the definitions load on every UI reload.
    from atlas_assets.lib.topics import build_topic_tree

    build = Build.start(context, store)
    paths = build.paths
    config = index_config(paths)
    options = config.topic_model
    if not config.topics_enabled:
        for name in TOPIC_RESOURCES:
            yield build.disabled(name)
        return
    data = build.read("dataset")
    latent = build.read("latent", read_latent)
    knn = build.read("knn_graph", read_knn)
    coords = build.read("projected", read_projected)
    field = options.topic_label_field or config.indexed_field
    texts = (
        data.column(field).cast(pa.string()).fill_null("").to_pylist()
        if field
        else [""] * data.num_rows
    )
    tree = build_topic_tree(
        latent,
        knn,
        coords,
        texts,
        seed=options.seed,
        cluster_method=options.cluster_method,
        encode=_label_encoder(paths, store),
    )

    id_field = data.column_names[0]
    labels = datum_labels(tree)
    per_datum = pa.table({id_field: data.column(id_field), **labels})
    before = build.previous("topics")
    params = {**options.model_dump(), "label_field": field, "depth": tree.depth}
    tables = {
        "topics": per_datum,
        "metadata": topic_metadata(tree),
        "hierarchy": hierarchy_table(tree),
    }
    for name, table in tables.items():
        write_resource(build.output(name), table, resource=name, **build.lineage(params))
    seconds = build.seconds()

    depth1 = tree.topics[tree.topics["depth"] == 1].sort_values("size", ascending=False)
    centroids = [
        (*coords[tree.assignments[:, 0] == tid].mean(axis=0), label)
        for tid, label in zip(depth1["topic_id"], depth1["label"], strict=True)
    ]
    largest = {
        f"depth {d}": [f"{r.label} ({r.size})" for r in g.nlargest(5, "size").itertuples()]
        for d, g in tree.topics.groupby("depth")
    }
    summary = {
        "topics_per_depth": dg.MetadataValue.json(
            {f"depth {d}": int(n) for d, n in tree.topics.groupby("depth").size().items()}
        ),
        "largest_topics": dg.MetadataValue.json(largest),
        # rows the clustering left as noise, then assigned to their nearest topic
        "noise_assigned": tree.noise,
        "map": png_markdown(
            map_png(
                coords,
                title=f"{paths.identifier}: depth-1 topics",
                colors=tree.assignments[:, 0],
                labels=centroids,
            )
        ),
    }
    if before is not None:
        before = before.to_pandas()
        summary["diff_depth_1"] = dg.MetadataValue.json(
            label_changes(
                before[id_field],
                before["topic_depth_1"],
                data.column(id_field).to_pylist(),
                labels["topic_depth_1"].to_pylist(),
            )
        )
    context.log.info(f"{len(tree.topics)} topics over {tree.depth} depths")
    for name, table in tables.items():
        yield build.result(
            table,
            params=params,
            metadata=summary if name == "topics" else None,
            asset_key=name,
            seconds=seconds,
        )


def _label_encoder(paths, store: AtlasStore) -> "Encoder | None":
    """Phrases to vectors with the model that made the latent vectors, or ``None`` for uploaded
    vectors (no model shares their space)."""
    params = (resource_info(paths.resource("latent")) or {}).get("params", {})
    if "mode" not in params:
        return None
    options = NomicEmbedOptions(
        **{k: params[k] for k in ("model", "mode", "batch_size") if k in params}
    )

    def encode(phrases: list[str]) -> np.ndarray:
        from atlas_assets.lib.embed import embed_texts

        return embed_texts(
            phrases,
            options.model,
            mode=options.mode,
            batch_size=options.batch_size,
            home=store.home(),
        )

    return encode
