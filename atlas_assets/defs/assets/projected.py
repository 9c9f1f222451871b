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
from atlas_assets.lib.plot import map_png
from atlas_assets.options import NomicProjectOptions
from atlas_assets.store import write_resource
from atlas_assets.store.datasets import map_config
from atlas_assets.store.files import matrix


@dg.asset(
    deps=["latent", "knn_graph"],
    kinds={"python", "umap", "arrow"},
    code_version="projected-v5",
    **ASSET_DEFAULTS,
)
def projected(context: dg.AssetExecutionContext, store: AtlasStore) -> dg.MaterializeResult:
    """The 2-D map: UMAP of the latent vectors over the shared kNN graph, reproducible by seed.

    ``NomicProjectOptions.model="umap"`` runs umap-learn itself instead of our layout (see
    ``lib.project.project``); the ``layout`` parameter records which one ran.

    Columns ``[id, x, y]`` (float32) in dataset order; the metadata carries a picture of the map.
    """
    # Imported here: numba compiles on import, and the definitions load on every UI reload.
    from atlas_assets.lib.project import layout_name, project

    start = perf_counter()
    paths = store.paths(context.partition_key)
    version = dataset_version(paths)
    latent = read_input(paths, "latent", version)
    knn = read_knn(read_input(paths, "knn_graph", version))
    options = NomicProjectOptions(**(map_config(paths).get("projection") or {}))
    # The parameters as used (None resolved) and which implementation ran are recorded (and so
    # are part of the data version).
    params = {**options.model_dump(), **options.umap_params(), "layout": layout_name(options.model)}
    context.log.info(f"projecting {latent.num_rows} points with UMAP ({params})")
    id_field = latent.column_names[0]
    ids = latent.column(id_field).to_pylist()
    # A refresh starts from the previous map (see defs/refresh.py), unless asked to start afresh.
    fresh = refresh.fresh_requested(context) or options.model == "umap"
    initial, before = (None, None) if fresh else refresh.previous_coords(paths, ids, params)
    coords = project(
        matrix(latent.column("embedding")),
        knn,
        model=options.model,
        initial=initial,
        **options.umap_params(),
    )
    table = pa.table(
        {
            id_field: latent.column(id_field),
            "x": pa.array(np.ascontiguousarray(coords[:, 0])),
            "y": pa.array(np.ascontiguousarray(coords[:, 1])),
        }
    )
    moved = refresh.map_movement(before, ids, coords)
    table = refresh.with_refresh(table, moved)
    write_resource(
        paths.output("projected"),
        table,
        resource="projected",
        dataset_version=version,
        params=params,
    )
    return dg.MaterializeResult(
        metadata={
            **table_metadata(table, seconds=perf_counter() - start, params=params),
            "map": png_markdown(map_png(coords, title=paths.identifier)),
            "refresh": dg.MetadataValue.json(moved),
        },
        data_version=data_version(version, params),
    )
