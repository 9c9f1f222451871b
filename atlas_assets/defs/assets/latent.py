from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa

from atlas_assets.defs.assets.common import ASSET_DEFAULTS, Build
from atlas_assets.defs.resources import AtlasStore, DaskCluster
from atlas_assets.lib import embed, static_embed
from atlas_assets.options import NomicEmbedOptions
from atlas_assets.store import resource_info
from atlas_assets.store.cache import EmbeddingCache
from atlas_assets.store.datasets import EMBEDDING_COLUMN, index_config, read_shards
from atlas_assets.store.files import matrix
from atlas_assets.store.layout import embedding_cache_dir
from atlas_assets.store.resources import write_latent


def _in_process(
    options: NomicEmbedOptions, log, home: Path | None
) -> Callable[[list[str]], np.ndarray]:
    """Embedding in this process, logging its progress."""
    reported = [0]

    def progress(done: int, total: int) -> None:
        if done == total or done - reported[0] >= 1_000:  # a line per ~1,000 texts
            reported[0] = done
            log.info(f"embedded {done}/{total} texts with {options.model} ({options.mode})")

    def encode(texts: list[str]) -> np.ndarray:
        if options.mode == "static":
            logged = [0]

            def distilling(done: int, total: int) -> None:
                # A line per ~5,000 tokens: distilling MiniLM passes ~60,000 in about a minute.
                if done == total or done - logged[0] >= 5_000:
                    logged[0] = done
                    log.info(
                        f"distilling a static model from {options.model}: {done}/{total} tokens"
                    )

            static_embed.load_static_model(options.model, home=home, progress=distilling)
        return embed.embed_texts(
            texts,
            options.model,
            mode=options.mode,
            batch_size=options.batch_size,
            progress=progress,
            home=home,
        )

    return encode


def _on_cluster(
    dask: DaskCluster, options: NomicEmbedOptions, context: dg.AssetExecutionContext, info: dict
) -> Callable[[list[str]], np.ndarray]:
    """Embedding as tasks on the Dask cluster, logging shards done and texts per second; what
    the run used (scheduler, dashboard, workers, shards) goes into ``info``."""
    from atlas_assets.lib import dask_embed

    def encode(texts: list[str]) -> np.ndarray:
        with dask.client() as client:
            address = dask.scheduler_address()
            workers = len(client.scheduler_info(n_workers=-1)["workers"])
            link = dask_embed.dashboard_link(client)
            info.update({"dask_scheduler": address, "dask_workers_at_start": workers})
            if link:
                info["dask_dashboard"] = dg.MetadataValue.url(link)
            context.log.info(
                f"embedding {len(texts)} texts with {options.model} on the Dask cluster at "
                f"{address} ({workers} workers{', dashboard ' + link if link else ''})"
            )
            if not workers:
                context.log.warning(f"the scheduler at {address} has no workers yet: waiting")
            logged = [0.0]

            def progress(done: int, total: int, texts_done: int, seconds: float) -> None:
                info["dask_shards"] = total
                # The first shard, the last and one line per 10 seconds in between.
                if done in (1, total) or seconds - logged[0] >= 10:
                    logged[0] = seconds
                    context.log.info(
                        f"embedded shard {done}/{total} on the cluster: {texts_done}/{len(texts)}"
                        f" texts, {texts_done / max(seconds, 1e-9):.1f} texts/s"
                    )

            return dask_embed.embed_on_cluster(
                client,
                texts,
                options.model,
                batch_size=options.batch_size,
                shard_size=dask.shard_size,
                resources=dask.worker_resources or None,
                progress=progress,
                name=f"atlas-embed-{context.run_id[:8]}",
            )

    return encode


@dg.asset(
    deps=["dataset"],
    kinds={"python", "pytorch", "arrow"},
    code_version="latent-v1",
    **ASSET_DEFAULTS,
)
def latent(
    context: dg.AssetExecutionContext, store: AtlasStore, dask: DaskCluster
) -> dg.MaterializeResult:
    """High-dimensional embeddings: one normalised float32 vector per datum, in dataset order.

    Texts of the indexed field go through the sentence-transformers model of the index
    (default: the bundled all-MiniLM-L6-v2), or with ``mode="static"`` through a static token
    table distilled from it (faster, blurrier topics); vectors are cached by (model, mode, text
    hash), so a refresh embeds only new or changed texts. Vectors uploaded with
    ``add_data(embeddings=...)`` are used as they are (normalised). With a Dask scheduler
    address (the ``dask`` resource or ``ATLAS_DASK_ADDRESS``), transformer texts are embedded as
    tasks on that cluster; uploaded vectors and the static mode never need it.
    """
    build = Build.start(context, store)
    data = build.read("dataset")
    config = index_config(build.paths)
    shard_names = resource_info(build.paths.resource("dataset"))["params"]["shards"]
    uploaded = read_shards(build.paths, [EMBEDDING_COLUMN], names=shard_names)
    cluster: dict[str, Any] = {}
    if EMBEDDING_COLUMN in uploaded.column_names:
        vectors = embed.normalize(matrix(uploaded.column(EMBEDDING_COLUMN)))
        params, embedded, cached = {"model": "uploaded embeddings"}, 0, 0
    else:
        options = config.embedding
        field = config.indexed_field
        texts = [t or "" for t in data.column(field).cast(pa.string()).to_pylist()]
        key = embed.model_key(options.model, options.mode)
        cache = EmbeddingCache(embedding_cache_dir(key, store.home()))
        on_cluster = options.mode == "transformer" and dask.scheduler_address()
        encode = (
            _on_cluster(dask, options, context, cluster)
            if on_cluster
            else _in_process(options, context.log, store.home())
        )
        vectors, embedded, cached = embed.embed_missing(texts, cache, encode)
        params = {**options.model_dump(), "indexed_field": field}
    ids = data.select([0])
    write_latent(build.output("latent"), ids, vectors, **build.lineage(params))
    return build.result(
        ids,
        params=params,
        metadata={
            "dimensions": int(vectors.shape[1]),
            "embedded_now": embedded,
            "from_cache": cached,
            **cluster,
        },
    )
