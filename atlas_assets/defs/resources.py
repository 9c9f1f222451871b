from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from atlas_assets.store import DatasetPaths, atlas_home, bind_run, partition_paths
from atlas_assets.store.remote import StoreConfigError, is_url, resolve_root, storage_options

# Where a run's process lives (see defs/publishing.py): create_index sets both tags as it creates
# the run; for other runs the store resource sets the host, and Dagster's log has the pid.
HOST_TAG = "atlas/host"
PID_TAG = "atlas/pid"

if TYPE_CHECKING:
    from distributed import Client

DASK_ADDRESS_ENV = "ATLAS_DASK_ADDRESS"


class AtlasStore(dg.ConfigurableResource):
    """The store root the assets read and write (default: ``$ATLAS_HOME`` or the checkout's).

    Inside a run, :meth:`paths` gives the run's view of a dataset: the run writes its own build
    of the map, published whole when the run has succeeded (see ``store/publish.py``).
    """

    root: str = ""
    # For a URL root (s3://bucket/prefix, ...): fsspec storage options (endpoint_url, profile,
    # anon, ...); empty means $ATLAS_STORAGE_OPTIONS.
    storage_options: dict[str, Any] = {}
    _run: tuple[str, ...] = PrivateAttr(default=())  # this run's id, then the runs it re-executes

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.dagster_run
        if run is None:
            return
        if HOST_TAG not in run.tags and context.instance is not None:
            context.instance.add_run_tags(run.run_id, {HOST_TAG: socket.gethostname()})
        chain = [run.run_id]
        parent = run.parent_run_id
        while parent and context.instance is not None and len(chain) < 50:
            chain.append(parent)
            parent_run = context.instance.get_run_by_id(parent)
            parent = parent_run.parent_run_id if parent_run else None
        self._run = tuple(chain)

    def home(self) -> Path:
        """The store root as a local path (a remote root's local mirror, see store/remote.py)."""
        if not self.root:
            return atlas_home()
        options = self.storage_options or (storage_options() if is_url(self.root) else None)
        try:
            return resolve_root(self.root, options, setting="the store resource's root")
        except StoreConfigError as err:
            raise dg.Failure(str(err)) from None

    def paths(self, partition_key: str) -> DatasetPaths:
        """The dataset paths of a partition (the run's view inside a run); an invalid key is
        refused before any file access."""
        try:
            paths = partition_paths(partition_key, self.home())
        except ValueError as err:
            raise dg.Failure(str(err)) from None
        return bind_run(paths, self._run[0], self._run[1:]) if self._run else paths


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
