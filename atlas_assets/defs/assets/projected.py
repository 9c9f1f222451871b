import dagster as dg

from atlas_assets.defs import refresh
from atlas_assets.defs.assets.common import ASSET_DEFAULTS, Build
from atlas_assets.defs.reporting import png_markdown
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.lib.plot import map_png
from atlas_assets.store.datasets import index_config
from atlas_assets.store.resources import read_ids, read_knn, read_latent, write_projected


@dg.asset(
    deps=["latent", "knn_graph"],
    kinds={"python", "umap", "arrow"},
    code_version="projected-v7",
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

    build = Build.start(context, store)
    ids = build.read("latent", read_ids)
    latent = build.read("latent", read_latent)
    knn = build.read("knn_graph", read_knn)
    options = index_config(build.paths).projection
    # The parameters as used (None resolved) and which implementation ran are recorded (and so
    # are part of the data version).
    params = {**options.model_dump(), **options.umap_params(), "layout": layout_name(options.model)}
    context.log.info(f"projecting {len(latent)} points with UMAP ({params})")
    # A refresh starts from the previous map (see defs/refresh.py), unless asked to start afresh.
    fresh = refresh.fresh_requested(context) or options.model == "umap"
    row_ids = ids.column(0).to_pylist()
    initial, before = (
        (None, None) if fresh else refresh.previous_coords(build.paths, row_ids, params)
    )
    coords = project(latent, knn, model=options.model, initial=initial, **options.umap_params())
    moved = refresh.map_movement(before, row_ids, coords)
    ids = refresh.with_refresh(ids, moved)  # kept in the file's schema for `atlas ls`
    table = write_projected(build.output("projected"), ids, coords, **build.lineage(params))
    return build.result(
        table,
        params=params,
        metadata={
            "map": png_markdown(map_png(coords, title=build.paths.identifier)),
            "refresh": dg.MetadataValue.json(moved),
        },
    )
