from __future__ import annotations

from pathlib import Path

import dagster as dg

from atlas_assets.store import DatasetPaths, atlas_home, partition_paths


class AtlasStore(dg.ConfigurableResource):
    """The store root the assets read and write (default: ``$ATLAS_HOME`` or the checkout's)."""

    root: str = ""

    def home(self) -> Path:
        return Path(self.root).resolve() if self.root else atlas_home()

    def paths(self, partition_key: str) -> DatasetPaths:
        """The dataset paths of a partition; an invalid key is refused before any file access."""
        try:
            return partition_paths(partition_key, self.home())
        except ValueError as err:
            raise dg.Failure(str(err)) from None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"store": AtlasStore()})
