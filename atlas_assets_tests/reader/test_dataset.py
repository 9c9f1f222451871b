"""AtlasDataset: identifiers, add_data's rules, and that a refused batch writes nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from atlas_assets import AtlasDataset, NomicDuplicatesOptions
from atlas_assets.lib.validate import MAX_CELL_BYTES
from atlas_assets.store import list_datasets
from atlas_assets.store.datasets import load_meta, read_shards


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the store with its content (the lock files aside)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (".lock", ".build.lock")
    }


def frame(ids, **extra) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "text": [f"text {i}" for i in ids], **extra})


@pytest.fixture
def ds(store) -> AtlasDataset:
    dataset = AtlasDataset("rules", unique_id_field="id")
    dataset.add_data(frame(["a", "b", "c"]))
    return dataset


def test_identifiers_are_slugs(store):
    assert AtlasDataset("My Data_Set").identifier == "my-data-set"
    org = AtlasDataset("Acme/Sales Notes")
    assert org.identifier == "acme/sales-notes"
    assert org._paths.root == store / "datasets" / "acme" / "sales-notes"
    assert org._paths.partition_key == "acme.sales-notes"


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("News 10k For Topic Extraction", "news-10k-for-topic-extraction"),
        ("Compat News (AG) 200", "compat-news-ag-200"),
        ("news.v2", "newsv2"),  # a dot is dropped, as the hosted client does: not a namespace
        ("compat.news.v2", "compatnewsv2"),
        ("Café  Crème__Brûlée", "cafe-creme-brulee"),
        ("ünï", "uni"),
        ("A Map That Gets Updated!", "a-map-that-gets-updated"),
    ],
)
def test_display_names_become_the_hosted_clients_slugs(store, name, slug):
    ds = AtlasDataset(name)
    assert ds.identifier == ds.slug == ds.name == slug
    assert ds._paths.root == store / "datasets" / slug
    ds.add_data([{"text": "stored"}])  # the first batch stores the dataset
    assert AtlasDataset(slug).id == ds.id  # the slug opens the same dataset


def test_partition_keys_are_parsed_apart_from_identifiers(tmp_path):
    from atlas_assets.store import dataset_paths, partition_paths

    assert partition_paths("acme.sales-notes", tmp_path).identifier == "acme/sales-notes"
    assert dataset_paths("acme.sales-notes", tmp_path).identifier == "acmesales-notes"
    for bad in ("a.b.c", "A.b", "a/b", "", "-x"):
        with pytest.raises(ValueError, match="partition key"):
            partition_paths(bad, tmp_path)


@pytest.mark.parametrize("bad", ["", "  ", "..", "a/../b", "a/b/c", "../x", "x/", "(!)", "a\\b"])
def test_identifiers_that_could_escape_are_refused(store, bad):
    with pytest.raises(ValueError, match="identifier"):
        AtlasDataset(bad)
    assert not (store / "datasets").exists() or not any((store / "datasets").rglob("*.json"))


def test_accepts_dataframe_table_and_dicts(store):
    ds = AtlasDataset("formats", unique_id_field="id")
    ds.add_data(frame(["1"]))
    ds.add_data(pa.Table.from_pandas(frame(["2"])))
    ds.add_data([{"id": "3", "text": "three"}])
    assert ds.total_datums == 3
    assert [r["id"] for r in ds.get_data(["3", "1"])] == ["3", "1"]


def test_integer_ids_are_stored_as_strings(store):
    ds = AtlasDataset("ints", unique_id_field="id")
    ds.add_data(pd.DataFrame({"id": [10, 11], "text": ["x", "y"]}))
    assert ds.get_data(["11"])[0]["id"] == "11"


def test_generated_ids_are_unique_across_batches(store):
    ds = AtlasDataset("generated")
    ds.add_data(pd.DataFrame({"text": ["a", "b"]}))
    ds.add_data(pd.DataFrame({"text": ["c", "d"]}))
    from atlas_assets.store.datasets import read_shards

    ids = read_shards(ds._paths).column("id_").to_pylist()
    assert ds.id_field == "id_" and len(set(ids)) == 4
    assert AtlasDataset("generated").id_field == "id_"  # reopening keeps the id field


BAD_BATCHES = {
    "null id": (frame(["x", None]), "null or empty ids at rows \\[1\\]"),
    "empty id": (frame(["x", " "]), "null or empty ids at rows \\[1\\]"),
    "repeat in batch": (frame(["x", "y", "x"]), "'x' at rows 0 and 2"),
    "repeat of stored": (frame(["d", "b"]), "already in the dataset: 'b' \\(row 1\\)"),
    "missing id column": (pd.DataFrame({"text": ["t"]}), "'id' is not a column"),
    "underscore column": (frame(["d"], _secret=[1]), "_secret"),
    "case clash": (frame(["d"], Text=["T"]), "'text' and 'Text' differ only in case"),
    "type conflict": (pd.DataFrame({"id": ["d"], "text": [1]}), "'text' has type int64"),
    "extra column": (frame(["d"], extra=[1]), "unexpected \\['extra'\\]"),
    "float ids": (pd.DataFrame({"id": [1.5], "text": ["t"]}), "strings or integers"),
    "no rows": (frame([]), "no rows"),
    "not a table": ("just text", "DataFrame"),
    "mixed types": (
        pd.DataFrame({"id": ["d", "e", "f"], "text": pd.Series(["t", 3, "u"], dtype=object)}),
        "column 'text' mixes value types: str at rows \\[0, 2\\]; int at rows \\[1\\]",
    ),
    "mixed types in dicts": (
        [{"id": "d", "text": "t"}, {"id": "e", "text": {"x": 1}}],
        "column 'text' mixes value types: .*dict at rows \\[1\\]",
    ),
    "lone surrogate": (
        pd.DataFrame({"id": ["d", "e"], "text": pd.Series(["t", "bad \udc80"], dtype=object)}),
        "column 'text' has text that is not valid Unicode \\(lone surrogates\\) at rows \\[1\\]",
    ),
    "lone surrogate in dicts": (
        [{"id": "d\ud800", "text": "t"}],
        "column 'id' has text that is not valid Unicode",
    ),
    "invalid UTF-8 in Arrow": (
        lambda: pa.table({"id": ["d", "e"], "text": invalid_utf8([b"fine", b"\xff\xfe broken"])}),
        "column 'text' has strings that are not valid UTF-8 at rows \\[1\\]",
    ),
    "id with surrounding whitespace": (frame([" a", "d"]), "surrounding whitespace.*rows \\[0\\]"),
    "id with a trailing newline": (frame(["d", "a\n"]), "control characters at rows \\[1\\]"),
    "id with a control character": (frame(["d\x00e"]), "control characters at rows \\[0\\]"),
    "huge cell": (
        lambda: pd.DataFrame({"id": ["d", "e"], "text": ["t", "x" * (MAX_CELL_BYTES + 1)]}),
        f"'text' has cells over the limit of {MAX_CELL_BYTES:,} bytes at rows \\[1\\]",
    ),
}


def invalid_utf8(values: list[bytes]) -> pa.Array:
    """A string array holding bytes that are not UTF-8, as a careless writer can produce."""
    raw = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())


@pytest.mark.parametrize("name", list(BAD_BATCHES))
def test_bad_batches_are_refused_and_write_nothing(ds, store, name):
    data, message = BAD_BATCHES[name]
    data = data() if callable(data) else data
    before = snapshot(store)
    with pytest.raises(ValueError, match=message):
        ds.add_data(data)
    assert snapshot(store) == before
    assert ds.total_datums == 3


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.array([[0.1, np.nan], [0.2, 0.3]]), "NaN or inf at rows \\[0\\]"),
        (np.array([[np.inf, 1.0], [0.2, 0.3]]), "NaN or inf at rows \\[0\\]"),
        (np.ones((3, 2)), "3 rows but the data has 2"),
        (np.array([[0.0, 0.0], [0.2, 0.3]]), "all zero at rows \\[0\\]"),
        (np.ones(2), "2-D"),
        # finite as float64, broken as float32 (the stored type): every later build would fail
        (np.array([[1e300, 1.0], [0.2, 0.3]]), "overflow float32 .*at rows \\[0\\]"),
        (np.array([[0.2, 0.3], [3e38, 3e38]]), "overflow float32 .*at rows \\[1\\]"),
        (np.array([[1e-300, 1e-300], [0.2, 0.3]]), "all zero at rows \\[0\\]"),
        (np.array([[0.2, 0.3], [1e-30, 1e-30]]), "too small to normalise .*rows \\[1\\]"),
    ],
)
def test_bad_embeddings_are_refused_and_write_nothing(store, vectors, message):
    ds = AtlasDataset("vectors", unique_id_field="id")
    before = snapshot(store)
    with pytest.raises(ValueError, match=message):
        ds.add_data(frame(["a", "b"]), embeddings=vectors)
    assert snapshot(store) == before


def test_embeddings_must_be_consistent_across_batches(store):
    ds = AtlasDataset("vectors", unique_id_field="id")
    ds.add_data(frame(["a", "b"]), embeddings=np.ones((2, 4)))
    with pytest.raises(ValueError, match="pass embeddings="):
        ds.add_data(frame(["c"]))
    with pytest.raises(ValueError, match="4 dimensions|stored ones have 4"):
        ds.add_data(frame(["c"]), embeddings=np.ones((1, 3)))


def test_create_index_rejects_bad_options_before_building(ds, store):
    before = snapshot(store)
    with pytest.raises(ValueError, match="not a column"):
        ds.create_index(indexed_field="nope")
    with pytest.raises(ValueError, match="invalid projection options"):
        ds.create_index(indexed_field="text", projection={"n_neigbors": 5})
    with pytest.raises(ValueError, match="invalid duplicate_detection"):
        ds.create_index(indexed_field="text", duplicate_detection={"cutoff": 0.2})
    with pytest.raises(ValueError, match="duplicate_cutoff"):
        NomicDuplicatesOptions(duplicate_cutoff=-0.1)
    assert snapshot(store) == before
    assert ds.maps == []


def test_create_index_needs_data(store):
    with pytest.raises(ValueError, match="no data"):
        AtlasDataset("empty").create_index(indexed_field="text")


def test_existing_dataset_keeps_its_id_field(ds):
    with pytest.raises(ValueError, match="already uses id field 'id'"):
        AtlasDataset("rules", unique_id_field="other")


def test_an_empty_column_takes_the_type_of_other_batches(store):
    from atlas_assets.store.datasets import read_shards, shard_schema

    ds = AtlasDataset("sparse", unique_id_field="id")
    ds.add_data(pd.DataFrame({"id": ["1"], "text": ["a"], "note": [np.nan]}))
    ds.add_data(pd.DataFrame({"id": ["2"], "text": ["b"], "note": ["written"]}))
    assert shard_schema(ds._paths).field("note").type == pa.string()
    assert read_shards(ds._paths).column("note").to_pylist() == [None, "written"]
    with pytest.raises(ValueError, match="'note' has type int64"):
        ds.add_data(pd.DataFrame({"id": ["3"], "text": ["c"], "note": [7]}))


def test_a_refused_first_batch_leaves_no_dataset(store):
    ds = AtlasDataset("fresh", unique_id_field="key")
    with pytest.raises(ValueError, match="'key' is not a column"):
        ds.add_data(frame(["a", "b"]))
    assert list_datasets() == [] and load_meta(ds._paths) is None
    retry = AtlasDataset("fresh", unique_id_field="id")  # the right id field is accepted
    retry.add_data(frame(["a", "b"]))
    assert AtlasDataset("fresh").id_field == "id" and retry.total_datums == 2
    assert [p.identifier for p in list_datasets()] == ["fresh"]


def test_a_dataset_left_without_data_takes_a_new_id_field(store):
    from atlas_assets.store import write_json

    # what a writer killed between creating the dataset and storing its first batch leaves
    wrong = AtlasDataset("crashed", unique_id_field="wrong")
    write_json(wrong._paths.meta, wrong._meta)
    ds = AtlasDataset("crashed", unique_id_field="id")
    ds.add_data(frame(["a"]))
    assert AtlasDataset("crashed").id_field == "id" and ds.total_datums == 1


def stored_ids(ds: AtlasDataset) -> list[str]:
    return read_shards(ds._paths).column(ds.id_field).to_pylist()


def test_delete_data_removes_rows_and_frees_their_ids(ds, store):
    ds.add_data(frame(["d", "e"]))
    assert ds.delete_data(ids=["b", "e"]) == 2
    assert stored_ids(ds) == ["a", "c", "d"] and ds.total_datums == 3
    ds.add_data(frame(["b"]))  # a deleted id may come back
    before = snapshot(store)
    with pytest.raises(KeyError, match="1 unknown ids, nothing deleted: \\['zz'\\]"):
        ds.delete_data(["a", "zz"])
    assert snapshot(store) == before


def test_deleted_generated_ids_are_never_reused(store):
    ds = AtlasDataset("generated")
    ds.add_data(pd.DataFrame({"text": ["a", "b"]}))
    ds.add_data(pd.DataFrame({"text": ["c"]}))
    ds.delete_data(["2"])  # the last batch, whole
    ds.add_data(pd.DataFrame({"text": ["d"]}))
    assert stored_ids(ds) == ["0", "1", "3"]


def test_a_crash_while_deleting_never_shows_both_versions_of_a_shard(ds, store):
    old = ds._paths.shard_files()[0]
    saved = old.read_bytes()
    ds.delete_data(["b"])
    old.write_bytes(saved)  # killed after publishing the new revision, before removing this
    assert stored_ids(ds) == ["a", "c"]
    ds.add_data(frame(["d"]))
    assert stored_ids(ds) == ["a", "c", "d"] and not old.exists()  # the next writer tidies up


# A child process that adds batches with generated ids; `stall` stops it right after a shard
# is published, where the old code had not yet saved the generated-id counter.
CHILD = """
import sys, time
import pandas as pd
from atlas_assets import AtlasDataset
import atlas_assets.reader.dataset as reader

if sys.argv[1] == "stall":
    publish = reader.write_shard

    def publish_then_stall(*args, **kwargs):
        name = publish(*args, **kwargs)
        print("published", flush=True)
        time.sleep(600)
        return name

    reader.write_shard = publish_then_stall
ds = AtlasDataset("killed")
print("ready", flush=True)
while True:
    ds.add_data(pd.DataFrame({"text": ["x", "y", "z"]}))
"""


def run_child(mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True, env=os.environ
    )


def kill9(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()


def check_accepts_the_next_batch() -> None:
    ds = AtlasDataset("killed")
    ds.add_data(pd.DataFrame({"text": ["after"]}))
    ids = stored_ids(ds)
    assert len(ids) == len(set(ids)) == ds.total_datums


def test_add_data_killed_after_publishing_a_shard_accepts_the_next_batch(store):
    child = run_child("stall")
    assert child.stdout.readline() == "ready\n"
    assert child.stdout.readline() == "published\n"
    kill9(child)
    check_accepts_the_next_batch()


def test_add_data_killed_at_any_point_accepts_the_next_batch(store):
    rng = random.Random(18)
    for _ in range(6):
        child = run_child("loop")
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.5))
        kill9(child)
        check_accepts_the_next_batch()


# -- the hosted client's calls (issue 17) ---------------------------------------------------


def test_option_models_take_the_hosted_clients_fields():
    from atlas_assets.data_inference import (
        NomicEmbedOptions,
        NomicTopicOptions,
        ProjectionOptions,
    )

    topics = NomicTopicOptions(cluster_method="hdbscan", enforce_topic_hierarchy=True)
    assert (topics.cluster_method, topics.enforce_topic_hierarchy) == ("hdbscan", True)
    auto = ProjectionOptions(model="nomic-project-v1", n_neighbors=None, min_dist=None)
    assert auto.umap_params() == {
        "n_neighbors": 15,
        "n_epochs": None,
        "min_dist": 0.1,
        "spread": 1.0,
        "seed": 0,
    }
    assert (
        ProjectionOptions(model="umap", n_neighbors=30, n_epochs=200).umap_params()["n_neighbors"]
        == 30
    )
    with pytest.raises(ValueError, match="cluster_method"):
        NomicTopicOptions(cluster_method="kmeans")
    with pytest.raises(ValueError, match="n_neigbors"):  # a typo is still an error
        ProjectionOptions(n_neigbors=5)
    assert NomicEmbedOptions(model="nomic-embed-text-v1.5").model == "nomic-embed-text-v1.5"


def test_options_are_assignable_and_assignments_are_validated():
    from atlas_assets.data_inference import NomicDuplicatesOptions, ProjectionOptions

    opts = ProjectionOptions()
    opts.n_neighbors = 30
    opts.model = "umap"
    assert opts.umap_params()["n_neighbors"] == 30 and opts.model == "umap"
    with pytest.raises(ValueError, match="n_neighbors"):
        opts.n_neighbors = 1
    with pytest.raises(ValueError, match="has no field|no_such"):
        opts.no_such = 3
    dup = NomicDuplicatesOptions()
    with pytest.raises(ValueError, match="cosine distance"):
        dup.duplicate_cutoff = 5.0


def test_nomic_project_v2_knobs_warn_once_that_they_mean_nothing_here():
    import warnings

    from atlas_assets import options
    from atlas_assets.data_inference import ProjectionOptions

    options._warned.discard("projection.rho")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ProjectionOptions(rho=0.5)
        ProjectionOptions(rho=0.7)
    messages = [str(w.message) for w in caught if "rho" in str(w.message)]
    assert len(messages) == 1 and "no local meaning" in messages[0]


@pytest.mark.parametrize("model", ["nomic-embed-text-v1.5", "NomicEmbed", "nomic-embed-text-v1"])
def test_hosted_only_models_are_refused_before_anything_runs(ds, store, model):
    from atlas_assets.data_inference import NomicEmbedOptions

    before = snapshot(store)
    for spelling in (model, {"model": model}, NomicEmbedOptions(model=model)):
        with pytest.raises(ValueError, match=f"'{model}' runs only on Nomic's hosted") as err:
            ds.create_index(indexed_field="text", embedding_model=spelling)
        assert "embedding_model unset" in str(err.value)
    assert snapshot(store) == before and ds.maps == []


def test_modality_blobs_and_pbar(ds, store):
    before = snapshot(store)
    with pytest.raises(ValueError, match="modality='embedding' needs vectors"):
        ds.create_index(indexed_field="text", modality="embedding")
    with pytest.raises(ValueError, match="'image' is not supported"):
        ds.create_index(indexed_field="text", modality="image")
    with pytest.raises(ValueError, match="blobs= \\(images\\) is not supported"):
        ds.add_data(frame(["z"]), blobs=["z.png"])
    assert snapshot(store) == before

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    ds.add_data(frame(["d", "e"]), pbar=bar)
    assert bar.n == 2 and ds.total_datums == 5
    assert ds.modality == "text" and ds.schema.names == ["id", "text"]


def test_embeddings_alone_or_as_an_arrow_column(store):
    alone = AtlasDataset("vectors only")
    alone.add_data(embeddings=np.random.default_rng(0).normal(size=(4, 8)))
    assert alone.total_datums == 4 and alone.dataset_fields == ["id_"]
    assert alone.modality == "embedding"
    table = pa.table({"id": ["a", "b"], "_embeddings": [[1.0, 0.0], [0.0, 1.0]]})
    ds = AtlasDataset("arrow vectors", unique_id_field="id")
    ds.add_data(table)
    assert ds.modality == "embedding" and ds.dataset_fields == ["id"]
    with pytest.raises(ValueError, match="modality='embedding'"):
        ds.create_index(modality="text")


def test_meta_and_get_map_before_a_map(ds):
    meta = ds.meta
    assert meta["slug"] == "rules" and meta["unique_id_field"] == "id"
    assert meta["total_datums_in_project"] == 3 and meta["atlas_indices"] == []
    assert meta["insert_update_delete_lock"] is False and meta["modality"] == "text"
    assert ds.indices == [] and ds.projections == []
    with pytest.raises(ValueError, match="no map yet"):
        ds.get_map()
    with pytest.raises(ValueError, match="no map with projection_id='x'"):
        ds.get_map(projection_id="x")


def test_dataset_id_opens_the_dataset(ds):
    assert AtlasDataset(dataset_id=ds.id).identifier == "rules"
    with pytest.raises(ValueError, match="no dataset with dataset_id"):
        AtlasDataset(dataset_id="nope")


def test_delete_removes_the_dataset_and_its_tags(ds, store):
    from atlas_assets.reader.tags import open_tag_store

    open_tag_store(ds._paths).add(["a"], "keep")
    root = ds._paths.root
    ds.delete()
    assert not root.exists()
    with pytest.raises(ValueError, match="was deleted"):
        ds.add_data(frame(["x"]))
    fresh = AtlasDataset("rules", unique_id_field="id")  # the name is free again
    assert fresh.total_datums == 0 and not fresh._paths.tag_db.exists()


HOLD_BUILD_LOCK = """
import sys, time
from pathlib import Path
from atlas_assets.store import dataset_paths
from atlas_assets.store.files import locked
with locked(dataset_paths(sys.argv[1]).build_lock):
    Path(sys.argv[2]).write_text("held")
    time.sleep(float(sys.argv[3]))
    Path(sys.argv[2]).write_text("releasing")  # still held: a waiter can only see this text
"""


def test_the_build_lock_is_seen_and_waited_for_across_processes(ds, store, tmp_path):
    import os
    import subprocess
    import sys
    import time

    marker = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_BUILD_LOCK, "rules", str(marker), "2.0"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        while not marker.exists() or marker.read_text() != "held":
            assert holder.poll() is None, "the lock holder died"
            time.sleep(0.05)
        assert ds.is_locked and not ds.is_accepting_data and ds.meta["insert_update_delete_lock"]
        start = time.monotonic()
        with ds.wait_for_dataset_lock() as waited:
            assert waited is ds
            assert marker.read_text() == "releasing"  # yielded only once the other was done
            assert not ds.is_locked and ds.is_accepting_data
        assert time.monotonic() - start > 0.5
    finally:
        holder.wait(timeout=30)
    with ds.wait_for_dataset_lock():  # no build running: yields at once
        pass


def test_a_build_loads_its_definitions_with_its_own_live_instance(store, monkeypatch):
    """Loading the definitions reads Dagster's defs-state context variable. A build that finds
    a collected instance's storage left there (seen once in CI, at a third build in one test)
    still builds."""
    from dagster._core.storage.defs_state import base as defs_state
    from dagster._core.storage.defs_state.blob_storage_state_storage import (
        UPathDefsStateStorage,
    )
    from upath import UPath

    import atlas_assets.defs.publishing as publishing

    class Gone:
        pass

    dead = UPathDefsStateStorage(UPath(str(store / "dead-state")))
    owner = Gone()
    dead.register_instance(owner)
    del owner  # the storage's instance is collected
    real = publishing.publish_finished

    def leaving_a_dead_storage(*args, **kwargs):
        out = real(*args, **kwargs)
        defs_state._current_storage.set(dead)
        return out

    monkeypatch.setattr(publishing, "publish_finished", leaving_a_dead_storage)
    ds = AtlasDataset("live", unique_id_field="id")
    ds.add_data(frame([str(i) for i in range(40)]), embeddings=np.eye(40, 8) + 0.1)
    atlas_map = ds.create_index(topic_model=False, duplicate_detection=False)
    assert atlas_map.embeddings.latent.shape == (40, 8)
