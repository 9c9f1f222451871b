"""atlas-assets: local data maps of text collections, read through the Atlas map-resources API.

from atlas_assets import AtlasDataset
"""

from atlas_assets.options import (
    NomicDuplicatesOptions,
    NomicEmbedOptions,
    NomicProjectOptions,
    NomicTopicOptions,
    ProjectionOptions,
)
from atlas_assets.reader import AtlasDataset, AtlasMap, AtlasMapData, AtlasMapEmbeddings
from atlas_assets.store import ResourceNotReadyError, StaleResourceError

__all__ = [
    "AtlasDataset",
    "AtlasMap",
    "AtlasMapData",
    "AtlasMapEmbeddings",
    "NomicDuplicatesOptions",
    "NomicEmbedOptions",
    "NomicProjectOptions",
    "NomicTopicOptions",
    "ProjectionOptions",
    "ResourceNotReadyError",
    "StaleResourceError",
]
