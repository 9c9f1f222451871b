"""``atlas.map_data``: the hosted client's one-call entry point, on the local store.

``from atlas_assets import atlas`` (instead of ``from nomic import atlas``), then
``atlas.map_data(data=df, indexed_field="text", identifier="My Map")`` creates the dataset, adds
the data, builds the map through Dagster and returns the :class:`AtlasDataset`.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import pandas as pd

from atlas_assets.reader.dataset import AtlasDataset
from atlas_assets.store import dataset_paths
from atlas_assets.store.datasets import load_meta

_ADJECTIVES = ("amber", "brisk", "calm", "deft", "eager", "fair", "gentle", "hazy", "keen", "lucid")
_NOUNS = ("atlas", "brook", "cedar", "delta", "ember", "fjord", "grove", "harbor", "isle", "lagoon")


def _random_name() -> str:
    """An unused ``adjective-noun`` name (the hosted client's default), numbered if need be."""
    base = f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}"
    name, n = base, 1
    while load_meta(dataset_paths(name)) is not None:
        n += 1
        name = f"{base}-{n}"
    return name


def map_data(
    data: Any = None,
    blobs: Any = None,
    embeddings: np.ndarray | None = None,
    identifier: str | None = None,
    description: str = "",
    id_field: str | None = None,
    is_public: bool = True,
    indexed_field: str | None = None,
    projection: Any = None,
    topic_model: Any = True,
    duplicate_detection: Any = True,
    embedding_model: Any = None,
    **legacy: Any,
) -> AtlasDataset:
    """Create a dataset, add ``data`` (and/or ``embeddings``), build its map; return the dataset.

    The hosted client's ``map_data``, argument for argument. With ``indexed_field`` the texts of
    that column are embedded (``embeddings``, if also given, are ignored with a warning, as the
    hosted client does); without it, ``embeddings`` (``(N, d)``) are mapped, with ``data`` as
    their columns or alone (ids are generated). ``identifier`` defaults to a random
    ``adjective-noun`` name, and also names the map. A dataset that already has data is refused
    (use ``add_data`` and ``create_index``). If the upload fails the new dataset is deleted.
    The build is synchronous: the map is ready when this returns. ``blobs`` (images) are not
    supported. Keywords of older clients' ``map_text`` / ``map_embeddings``
    (``colorable_fields``, ``build_topic_model``, ``topic_label_field``) are accepted: every
    field is colourable in the map explorer, and the other two set ``topic_model``.
    """
    unknown = set(legacy) - {"colorable_fields", "build_topic_model", "topic_label_field"}
    if unknown:
        raise TypeError(f"map_data() got unexpected keyword arguments {sorted(unknown)}")
    if "build_topic_model" in legacy or "topic_label_field" in legacy:
        topic_model = {
            "build_topic_model": legacy.get("build_topic_model", True),
            "topic_label_field": legacy.get("topic_label_field"),
        }
    if blobs is not None:
        raise ValueError(
            "blobs= (images) is not supported: atlas-assets maps texts and embeddings; "
            "embed your images yourself and pass embeddings="
        )
    if embeddings is not None and indexed_field is not None:
        warnings.warn(
            "map_data: an indexed_field was given, so the texts are embedded and the "
            "embeddings are ignored (as in the hosted client)",
            UserWarning,
            stacklevel=2,
        )
        embeddings = None
    if embeddings is None and data is None:
        raise ValueError("map_data needs data, embeddings or both")
    if embeddings is None and indexed_field is None:
        raise ValueError("indexed_field is required to map texts: the column to embed")
    name = identifier or _random_name()
    dataset = AtlasDataset(
        name, description=description, unique_id_field=id_field, is_public=is_public
    )
    if dataset.total_datums > 0:
        raise ValueError(
            f"dataset {dataset.identifier!r} already has data: map_data creates new datasets; "
            "use add_data and create_index to update it"
        )
    if isinstance(data, pd.DataFrame):
        data = data.reset_index(drop=True)
    from atlas_assets.reader.run import check_build_settings

    check_build_settings()  # before the upload: a wrong database setting leaves nothing behind
    try:
        dataset.add_data(data=data, embeddings=embeddings)
    except BaseException:
        dataset.delete()  # nothing of a failed first upload is left behind
        raise
    dataset.create_index(
        name=name,
        indexed_field=indexed_field,
        modality="text" if embeddings is None else "embedding",
        projection=projection,
        topic_model=topic_model,
        duplicate_detection=duplicate_detection,
        embedding_model=embedding_model,
    )
    return dataset


__all__ = ["map_data"]
