from pathlib import Path
from time import perf_counter

import dagster as dg
import numpy as np
import pyarrow as pa

from atlas_assets.defs.assets.common import (
    ASSET_DEFAULTS,
    data_version,
    dataset_version,
    read_input,
)
from atlas_assets.defs.metadata import table_metadata
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.lib import embed, static_embed
from atlas_assets.options import NomicEmbedOptions
from atlas_assets.store import resource_info, write_resource
from atlas_assets.store.cache import EmbeddingCache
from atlas_assets.store.datasets import EMBEDDING_COLUMN, map_config, read_shards
from atlas_assets.store.files import fixed_list, matrix
from atlas_assets.store.layout import embedding_cache_dir


def embed_with_cache(
    texts: list[str],
    options: NomicEmbedOptions,
    cache: EmbeddingCache,
    log,
    home: Path | None = None,
) -> tuple[np.ndarray, int, int]:
    """Vectors for ``texts``, embedding only texts missing from the cache.

    ``cache`` must be the cache of ``options``' model and mode. In static mode the static model
    is read from the store at ``home`` (or distilled there first, logging its progress).
    Returns the vectors, how many distinct texts were embedded now and how many rows came
    from the cache.
    """
    hashes = embed.text_hashes(texts)
    found, vectors = cache.lookup(hashes)
    if found.all():
        return vectors, 0, len(texts)
    todo, first = np.unique(hashes[~found], return_index=True)
    rows = np.flatnonzero(~found)[first]

    reported = [0]

    def progress(done: int, total: int) -> None:
        if done == total or done - reported[0] >= 1_000:  # a line per ~1,000 texts
            reported[0] = done
            log.info(f"embedded {done}/{total} texts with {options.model} ({options.mode})")

    if options.mode == "static":
        logged = [0]

        def distilling(done: int, total: int) -> None:
            # A line per ~5,000 tokens: distilling MiniLM passes ~60,000 in about a minute.
            if done == total or done - logged[0] >= 5_000:
                logged[0] = done
                log.info(f"distilling a static model from {options.model}: {done}/{total} tokens")

        static_embed.load_static_model(options.model, home=home, progress=distilling)

    fresh = embed.embed_texts(
        [texts[i] for i in rows],
        options.model,
        mode=options.mode,
        batch_size=options.batch_size,
        progress=progress,
        home=home,
    )
    cache.add(todo, fresh)
    if vectors is None:
        vectors = np.zeros((len(texts), fresh.shape[1]), np.float32)
    vectors[~found] = fresh[np.searchsorted(todo, hashes[~found])]
    return vectors, len(todo), int(found.sum())


@dg.asset(
    deps=["dataset"],
    kinds={"python", "pytorch", "arrow"},
    code_version="latent-v1",
    **ASSET_DEFAULTS,
)
def latent(context: dg.AssetExecutionContext, store: AtlasStore) -> dg.MaterializeResult:
    """High-dimensional embeddings: one normalised float32 vector per datum, in dataset order.

    Texts of the indexed field go through the sentence-transformers model of the index
    (default: the bundled all-MiniLM-L6-v2), or with ``mode="static"`` through a static token
    table distilled from it (faster, blurrier topics); vectors are cached by (model, mode, text
    hash), so a refresh embeds only new or changed texts. Vectors uploaded with
    ``add_data(embeddings=...)`` are used as they are (normalised).
    """
    start = perf_counter()
    paths = store.paths(context.partition_key)
    version = dataset_version(paths)
    data = read_input(paths, "dataset", version)
    config = map_config(paths)
    id_field = data.column_names[0]
    shard_names = resource_info(paths.resource("dataset"))["params"]["shards"]
    uploaded = read_shards(paths, [EMBEDDING_COLUMN], names=shard_names)
    if EMBEDDING_COLUMN in uploaded.column_names:
        vectors = embed.normalize(matrix(uploaded.column(EMBEDDING_COLUMN)))
        params, embedded, cached = {"model": "uploaded embeddings"}, 0, 0
    else:
        options = NomicEmbedOptions(**config.get("embedding", {}))
        field = config["indexed_field"]
        texts = [t or "" for t in data.column(field).cast(pa.string()).to_pylist()]
        key = embed.model_key(options.model, options.mode)
        cache = EmbeddingCache(embedding_cache_dir(key, store.home()))
        vectors, embedded, cached = embed_with_cache(
            texts, options, cache, context.log, home=store.home()
        )
        params = {**options.model_dump(), "indexed_field": field}
    table = pa.table({id_field: data.column(id_field), "embedding": fixed_list(vectors)})
    write_resource(
        paths.output("latent"), table, resource="latent", dataset_version=version, params=params
    )
    return dg.MaterializeResult(
        metadata={
            **table_metadata(
                table.select([id_field]), seconds=perf_counter() - start, params=params
            ),
            "dimensions": int(vectors.shape[1]),
            "embedded_now": embedded,
            "from_cache": cached,
        },
        data_version=data_version(version, params),
    )
