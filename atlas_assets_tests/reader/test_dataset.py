"""AtlasDataset: identifiers, add_data's rules, and that a refused batch writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from atlas_assets import AtlasDataset, NomicDuplicatesOptions


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the store with its content (the lock file aside)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
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


@pytest.mark.parametrize("bad", ["", "  ", "..", "a/../b", "a/b/c", "../x", "x/", "ünï", "a\\b"])
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
}


@pytest.mark.parametrize("name", list(BAD_BATCHES))
def test_bad_batches_are_refused_and_write_nothing(ds, store, name):
    data, message = BAD_BATCHES[name]
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
