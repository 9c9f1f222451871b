"""What only the PostgreSQL tag store has to show: datasets sharing its tables stay apart, a
deleted dataset leaves no tags behind, and text PostgreSQL cannot hold is refused up front."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from atlas_assets.lib.tagstore import PALETTE
from atlas_assets.lib.tagstore_pg import PostgresTagStore

_keys = itertools.count()


def key(name: str) -> str:
    return f"{name}-{next(_keys)}"


def test_datasets_sharing_the_tables_stay_apart(tags_db):
    a, b = PostgresTagStore(tags_db, key("a")), PostgresTagStore(tags_db, key("b"))
    a.add(["1", "2"], "keep")
    b.add(["9"], "keep")
    b.add(["9"], "other")
    assert a.get_datums_in_tag("keep") == ["1", "2"] and b.get_datums_in_tag("keep") == ["9"]
    assert a.counts() == {"keep": 2} and b.counts() == {"keep": 1, "other": 1}
    # Creation order and colours count per dataset, as each SQLite file does.
    assert [t["metadata"]["color"] for t in b.get_tags()] == list(PALETTE[:2])
    with pytest.raises(ValueError, match="Unknown tag 'other'.*known tags \\(1\\): 'keep'"):
        a.remove(["1"], "other")
    a.drop()
    assert not a.exists() and a.get_tags() == []
    assert b.counts() == {"keep": 1, "other": 1}
    a.add(["3"], "fresh")  # a dataset made again under the same key starts afresh
    assert [t["metadata"]["color"] for t in a.get_tags()] == [PALETTE[0]]


def test_nul_characters_are_refused_before_writing(tags_db):
    store = PostgresTagStore(tags_db, key("nul"))
    store.add(["ok"], "t")
    with pytest.raises(ValueError, match="NUL character"):
        store.add(["ok", "bad\x00id"], "t")
    with pytest.raises(ValueError, match="NUL character"):
        store.add(["ok"], "bad\x00tag")
    assert store.counts() == {"t": 1}


def test_deleting_a_dataset_deletes_its_tags(store, tags_db, arxiv, monkeypatch):
    from atlas_assets import AtlasDataset
    from atlas_assets.cli import main

    monkeypatch.setenv("ATLAS_TAGS_URL", tags_db)
    ds = AtlasDataset("to delete", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(3))
    ids = store / "ids.txt"
    ids.write_text("0704.0001\n")
    assert main(["tag", "to-delete", "keep", "--ids-from", str(ids)]) == 0
    count = "SELECT count(*) FROM atlas_tags WHERE dataset = 'to-delete'"
    with psycopg.connect(tags_db) as con:
        assert con.execute(count).fetchone() == (1,)
    ds.delete()
    with psycopg.connect(tags_db) as con:
        assert con.execute(count).fetchone() == (0,)
    assert not AtlasDataset("to delete", unique_id_field="arxiv_id")._paths.root.exists()
