from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from atlas_assets.store import DatasetPaths, atlas_home, dataset_paths

if TYPE_CHECKING:
    from distributed import Client

DASK_ADDRESS_ENV = "ATLAS_DASK_ADDRESS"


class AtlasStore(dg.ConfigurableResource):
    """The store root the assets read and write (default: ``$ATLAS_HOME`` or the checkout's)."""

    root: str = ""

    def home(self) -> Path:
        return Path(self.root).resolve() if self.root else atlas_home()

    def paths(self, partition_key: str) -> DatasetPaths:
        """The dataset paths of a partition; an invalid key is refused before any file access."""
        try:
            return dataset_paths(partition_key, self.home())
        except ValueError as err:
            raise dg.Failure(str(err)) from None


class DaskCluster(dg.ConfigurableResource):
    """Where the ``latent`` asset embeds: on a Dask cluster when a scheduler address is set, in
    the run's own process otherwise (then nothing from ``dask`` is imported).

    ``address``: the scheduler (``tcp://host:8786``); empty means ``$ATLAS_DASK_ADDRESS``.
    ``shard_size``: texts per task. ``worker_resources``: abstract resources each task needs,
    declared by the workers (``dask worker ... --resources GPU=1``). ``connect_timeout``: seconds
    to reach the scheduler before the run fails.
    """

    address: str = ""
    shard_size: int = 1024
    worker_resources: dict[str, float] = {}
    connect_timeout: float = 10.0

    def scheduler_address(self) -> str | None:
        """The configured address, else ``$ATLAS_DASK_ADDRESS``, else None (in-process)."""
        return self.address or os.environ.get(DASK_ADDRESS_ENV) or None

    @contextmanager
    def client(self) -> Iterator[Client]:
        """A client of the scheduler, closed after; an unreachable one fails the run at once."""
        from atlas_assets.lib import dask_embed

        address = self.scheduler_address()
        if address is None:
            raise dg.Failure(f"no Dask scheduler address: set {DASK_ADDRESS_ENV} or 'address'")
        source = "the resource's address" if self.address else DASK_ADDRESS_ENV
        try:
            client = dask_embed.connect(address, self.connect_timeout)
        except (ConnectionError, ImportError) as err:
            raise dg.Failure(f"{err}; the address comes from {source}") from None
        try:
            yield client
        finally:
            client.close()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"store": AtlasStore(), "dask": DaskCluster()})
