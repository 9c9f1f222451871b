"""``AtlasMapDuplicates``: semantic duplicate clusters and the pairs behind them."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from atlas_assets.store.resources import DELETION, DUPLICATE_CLASS, RETENTION, deletion_candidates

if TYPE_CHECKING:
    from atlas_assets.reader.map import AtlasMap


class AtlasMapDuplicates:
    """Every datum's duplicate cluster and class (``singleton``, ``retention candidate`` or
    ``deletion candidate``).

    Two datums share a cluster when their latent vectors are within ``duplicate_cutoff`` cosine
    distance, directly or through a chain of such pairs. Each cluster of two or more keeps one
    retention candidate, chosen by the map's keep rule (default: the first datum in upload
    order); removing every deletion candidate semantically deduplicates the dataset.
    """

    def __init__(self, atlas_map: AtlasMap) -> None:
        if not atlas_map.index_config.duplicates_enabled:
            raise ValueError(
                "duplicate detection is off for this map: rebuild it with "
                "create_index(duplicate_detection=True)"
            )
        self._map = atlas_map

    @cached_property
    def tb(self) -> pa.Table:
        """``[id, duplicate_class, cluster_id]``, memory-mapped, in dataset order."""
        return self._map.read("duplicates")

    @property
    def df(self) -> pd.DataFrame:
        """``[id, duplicate_class, cluster_id]`` as a DataFrame."""
        return self.tb.to_pandas()

    def deletion_candidates(self) -> list[str]:
        """Ids of the datums that can be deleted to deduplicate the dataset."""
        return deletion_candidates(self.tb)

    def pairs(self) -> pd.DataFrame:
        """Every pair within the cutoff, ``[<id>_a, <id>_b, distance]``: see what sits near it."""
        return self._map.read("duplicates", part="pairs").to_pandas()

    @property
    def cutoff(self) -> float:
        return self._map.index_config.duplicate_detection.duplicate_cutoff

    def __repr__(self) -> str:
        classes = self.tb.column(DUPLICATE_CLASS)
        deletions = pc.sum(pc.equal(classes, DELETION)).as_py() or 0
        clusters = pc.sum(pc.equal(classes, RETENTION)).as_py() or 0
        return f"{deletions} deletion candidates in {clusters} clusters"
