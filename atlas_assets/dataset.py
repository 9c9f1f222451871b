"""The dataset and map classes under the hosted client's module path (``nomic.dataset``).

``AtlasProjection`` is the hosted client's name for :class:`AtlasMap`.
"""

from atlas_assets.reader.dataset import AtlasDataset
from atlas_assets.reader.map import (
    AtlasIndex,
    AtlasMap,
    AtlasMapData,
    AtlasMapEmbeddings,
    AtlasProjection,
)

__all__ = [
    "AtlasDataset",
    "AtlasIndex",
    "AtlasMap",
    "AtlasMapData",
    "AtlasMapEmbeddings",
    "AtlasProjection",
]
