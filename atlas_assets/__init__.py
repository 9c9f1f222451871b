"""atlas-assets: local data maps of text collections, read through the Atlas map-resources API.

from atlas_assets import AtlasDataset, atlas   # instead of: from nomic import AtlasDataset, atlas

The hosted client's module paths work too: ``atlas_assets.atlas`` (``map_data``),
``atlas_assets.data_inference`` (the option models), ``atlas_assets.dataset`` (the classes).
"""

from atlas_assets import atlas, data_inference, dataset
from atlas_assets.options import (
    NomicDuplicatesOptions,
    NomicEmbedOptions,
    NomicProjectOptions,
    NomicTopicOptions,
    ProjectionOptions,
)
from atlas_assets.reader import AtlasDataset, AtlasMap, AtlasMapData, AtlasMapEmbeddings
from atlas_assets.reader.map import AtlasProjection
from atlas_assets.store import ResourceNotReadyError, StaleResourceError

__all__ = [
    "AtlasDataset",
    "AtlasMap",
    "AtlasMapData",
    "AtlasMapEmbeddings",
    "AtlasProjection",
    "NomicDuplicatesOptions",
    "NomicEmbedOptions",
    "NomicProjectOptions",
    "NomicTopicOptions",
    "ProjectionOptions",
    "ResourceNotReadyError",
    "StaleResourceError",
    "atlas",
    "data_inference",
    "dataset",
]
