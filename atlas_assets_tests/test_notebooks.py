"""Notebooks written for Nomic Atlas run unchanged but for the import (issue 17).

Each script in ``notebooks/`` is written as Nomic's README, examples and docs write it, with
``from nomic import ...``; here only that import is swapped for ``atlas_assets`` and the script
runs as a real process against a fresh store, building real maps through Dagster. The scripts
assert what a notebook goes on to use; the tests check what they leave behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from atlas_assets_tests.conftest import SAMPLE, store_at

NOTEBOOKS = Path(__file__).parent / "notebooks"
ROOT = Path(__file__).resolve().parents[1]


def swap_import(source: str) -> str:
    """The one change a user makes: ``nomic`` -> ``atlas_assets`` in the imports."""
    source = re.sub(r"^from nomic(?=[ .])", "from atlas_assets", source, flags=re.M)
    return re.sub(r"^import nomic$", "import atlas_assets as nomic", source, flags=re.M)


def run_script(source: str, store: Path, *args: str, timeout: float = 900) -> dict:
    """Run ``source`` as a script on ``store``; its last stdout line is a JSON summary."""
    script = store.parent / f"notebook-{abs(hash(source))}.py"
    script.write_text(source)
    env = {
        **os.environ,
        "ATLAS_HOME": str(store),
        "DAGSTER_HOME": str(store / ".dagster"),
        "ARXIV_SAMPLE": str(SAMPLE),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=store.parent,
    )
    assert done.returncode == 0, f"the notebook failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_notebook(name: str, store: Path) -> dict:
    source = (NOTEBOOKS / name).read_text()
    assert re.search(r"^from nomic import", source, flags=re.M)  # written for the hosted client
    return run_script(swap_import(source), store)


def test_swap_import_changes_only_the_imports():
    source = "from nomic import atlas\nfrom nomic.data_inference import X\nimport nomic\nnomic=1\n"
    assert swap_import(source) == (
        "from atlas_assets import atlas\nfrom atlas_assets.data_inference import X\n"
        "import atlas_assets as nomic\nnomic=1\n"
    )


def test_text_notebook(tmp_path):
    """map_data with every option model, the lock, links, latent in place, topics, tags,
    identity, a refused hosted-only model and images, add_data(pbar), create_index(modality),
    and a cleanup cell that deletes the dataset (its files and its Dagster partition)."""
    import dagster as dg

    from atlas_assets.defs.partitions import atlas_datasets

    store = tmp_path / "store"
    summary = run_notebook("nb_map_text.py", store)
    assert summary["identifier"] == "news-10k-for-topic-extraction"
    assert not Path(summary["root"]).exists()
    with store_at(store), dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/partition": summary["partition"]})
        )
        assert len(runs) == 2  # map_data's build and the rebuild, both through Dagster
        assert not instance.has_dynamic_partition(atlas_datasets.name, summary["partition"])
    # The slugs the notebook only opened, and the failed images map, left nothing: a dataset is
    # stored with its first batch.
    assert list((store / "datasets").iterdir()) == []


def test_embeddings_notebook(tmp_path):
    """map_data(embeddings=...) alone (a random name), then with data and an identifier,
    get_map(name), and add_data + rebuild_maps under wait_for_dataset_lock."""
    from atlas_assets import AtlasDataset

    store = tmp_path / "store"
    summary = run_notebook("nb_map_embeddings.py", store)
    with store_at(store):
        random_one = AtlasDataset(summary["random_name"])
        assert random_one.total_datums == 120 and random_one.dataset_fields == ["id_"]
        updated = AtlasDataset("A Map That Gets Updated")
        assert updated.identifier == summary["updated"] == "a-map-that-gets-updated"
        assert updated.total_datums == 240 and updated.get_map().name == "A Map That Gets Updated"


BUILD_WITH_SEED = """
import json, sys, time
from atlas_assets import AtlasDataset
from atlas_assets.store import resource_info

dataset = AtlasDataset("Shared Vectors")
atlas_map = dataset.create_index(
    projection={"seed": int(sys.argv[1])}, topic_model=False, duplicate_detection=False
)
finished = time.time()
built = resource_info(atlas_map._paths.resource("projected"))["params"]["seed"]
print(json.dumps({"seed": atlas_map.config["projection"]["seed"], "built": built, "end": finished}))
"""


def test_concurrent_builds_of_one_dataset_each_use_their_own_options(store, tmp_path):
    """Two notebooks build one dataset at once with different options: the second waits for
    the first (a real second process), and each map is built with its caller's options."""
    from concurrent.futures import ThreadPoolExecutor

    from atlas_assets import AtlasDataset
    from atlas_assets.store import resource_info

    ds = AtlasDataset("Shared Vectors")
    ds.add_data(embeddings=np.random.default_rng(3).normal(size=(60, 16)))
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(run_script, BUILD_WITH_SEED, store, "1")
        deadline = time.monotonic() + 300
        while not ds.is_locked:  # the other process is building now
            assert not other.done(), "the other build ended before this one could start"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not ds.is_accepting_data
        atlas_map = ds.create_index(
            projection={"seed": 2}, topic_model=False, duplicate_detection=False
        )
        first = other.result(timeout=120)
    assert (first["seed"], first["built"]) == (1, 1)
    assert atlas_map.config["projection"]["seed"] == 2
    # This call recorded its options only once the other build had ended (ISO seconds).
    recorded = datetime.fromisoformat(atlas_map.config["updated_timestamp"]).timestamp()
    assert recorded >= int(first["end"])
    assert resource_info(ds._paths.resource("projected"))["params"]["seed"] == 2
    assert not ds.is_locked


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("nb_*.py")))
def test_every_notebook_is_run_by_a_test(name):
    assert name in Path(__file__).read_text()
