"""The thin reader: the documented accessor API over the materialized files."""

from atlas_assets.reader.dataset import AtlasDataset
from atlas_assets.reader.map import AtlasMap, AtlasMapData, AtlasMapEmbeddings

__all__ = ["AtlasDataset", "AtlasMap", "AtlasMapData", "AtlasMapEmbeddings"]
