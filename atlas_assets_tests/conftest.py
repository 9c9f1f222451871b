"""Shared fixtures: an isolated store per test, the bundled arXiv sample, one real built map."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "arxiv_2007_sample.csv.gz"
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, for ``None``, unset) environment variables for the body, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def store_at(root: Path) -> Iterator[Path]:
    """Point ATLAS_HOME and DAGSTER_HOME at ``root`` for the body."""
    with environment(ATLAS_HOME=str(root), DAGSTER_HOME=str(root / ".dagster")):
        yield root


@pytest.fixture(autouse=True)
def _no_leaked_dagster_state_storage() -> Iterator[None]:
    """Each test loads Dagster definitions as a new process would. Entering a ``DagsterInstance``
    sets a context variable (its defs-state storage) that an instance entered and never exited,
    by a test or by Dagster's test helpers, leaves behind; a later definitions load in that
    worker then fails on the dead instance ("undefined DagsterInstance weakref"), depending on
    which tests ran before it."""
    if "dagster" not in sys.modules:  # tests that never import Dagster stay free of it
        yield
        return
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """An empty store (and Dagster instance folder) for one test."""
    with store_at(tmp_path / "store") as root:
        yield root


@pytest.fixture(scope="session")
def arxiv() -> pd.DataFrame:
    """The bundled CC0 arXiv sample, ids as text."""
    return pd.read_csv(SAMPLE, dtype={"arxiv_id": str})


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, arxiv: pd.DataFrame):
    """One real map of 90 arXiv abstracts in two batches, built through Dagster's instance.

    Returns ``(dataset, atlas_map, frame)``; the objects keep their store paths after the
    environment is restored.
    """
    from atlas_assets import AtlasDataset

    frame = arxiv.head(90).reset_index(drop=True)
    with store_at(tmp_path_factory.mktemp("built")):
        ds = AtlasDataset("arXiv Sample", unique_id_field="arxiv_id")
        ds.add_data(frame.head(50))
        ds.add_data(frame.iloc[50:])
        atlas_map = ds.create_index(indexed_field="abstract")
    return ds, atlas_map, frame


# Token ids a test static model distils: the common English words, in seconds rather than the
# minute the full vocabulary takes.
STATIC_VOCAB = 3000


@pytest.fixture(scope="session")
def static_model():
    """A static model distilled from the bundled MiniLM over its first token ids only."""
    from atlas_assets.lib.static_embed import distill

    return distill(vocab_limit=STATIC_VOCAB)


@pytest.fixture(scope="session")
def dask_cluster():
    """A real Dask cluster on loopback only: a scheduler and two single-thread worker processes
    (dashboard on 127.0.0.1, a free port), closed after the session."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on a free 127.0.0.1 port for the session (Debian's postgresql,
    started with initdb and pg_ctl in a temporary folder, stopped after); tests skip, saying
    why, where it is not installed."""
    from atlas_assets_tests import pg

    try:
        server = pg.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tags_db(postgres) -> str:
    """The URL of a database on the session's server for tag stores (datasets share it, each
    under its own key, as a team's datasets do)."""
    return postgres.create_database("atlas_tags")
