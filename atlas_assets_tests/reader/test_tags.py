"""AtlasMapTags over the live store: round trips, concurrency, re-indexing, bad input.

Every test runs on both backends: SQLite beside the data (the default) and PostgreSQL
(``ATLAS_TAGS_URL``, a fresh database on the session's real server per test).
"""

from __future__ import annotations

import itertools
import multiprocessing
import shutil

import pytest

from atlas_assets import AtlasDataset
from atlas_assets.cli import main

_databases = itertools.count()


@pytest.fixture(autouse=True, params=["sqlite", "postgres"])
def tags_backend(request, monkeypatch) -> str:
    if request.param == "postgres":
        server = request.getfixturevalue("postgres")
        url = server.create_database(f"reader_tags_{next(_databases)}")
        monkeypatch.setenv("ATLAS_TAGS_URL", url)
    else:
        monkeypatch.delenv("ATLAS_TAGS_URL", raising=False)
    return request.param


@pytest.fixture
def tagged(built, store):
    """A private copy of the built map, so tag writes stay in this test."""
    ds, _, frame = built
    shutil.copytree(ds._paths.root, store / "datasets" / ds.slug)
    copy = AtlasDataset(ds.identifier)
    return copy, copy.maps[0], frame


def test_round_trip_add_get_remove(tagged, tags_backend):
    ds, atlas_map, frame = tagged
    had_file = ds._paths.tag_db.exists()
    ids = frame["arxiv_id"][:5].tolist()
    assert atlas_map.tags.add(ids, "physics") == 5
    assert atlas_map.tags.add(ids[:2], ["physics", "review"]) == 2
    assert sorted(atlas_map.tags.get_datums_in_tag("physics")) == sorted(ids)
    tags = atlas_map.tags.get_tags()
    assert [t["tag_name"] for t in tags] == ["physics", "review"]
    assert set(tags[0]) == {"tag_name", "tag_id", "tag_definition_id", "metadata"}
    assert tags[0]["tag_definition_id"] == tags[0]["tag_id"]
    rows = ds.get_data(atlas_map.tags.get_datums_in_tag("review"))
    assert sorted(r["arxiv_id"] for r in rows) == sorted(ids[:2])
    assert atlas_map.tags.remove(ids[:1], "physics") == 1
    assert len(atlas_map.tags.get_datums_in_tag("physics")) == 4
    atlas_map.tags.remove(None, "review", delete_all=True)
    assert [t["tag_name"] for t in atlas_map.tags.get_tags()] == ["physics"]
    # The backend really is the one configured: PostgreSQL leaves the SQLite file alone.
    if tags_backend == "postgres":
        assert ds._paths.tag_db.exists() == had_file
    else:
        assert ds._paths.tag_db.exists()


def test_df_is_aligned_to_the_map(tagged):
    _, atlas_map, frame = tagged
    atlas_map.tags.add([frame["arxiv_id"][2]], "keep")
    df = atlas_map.tags.df
    assert list(df.columns) == ["arxiv_id", "keep"]
    assert df["arxiv_id"].tolist() == frame["arxiv_id"].tolist()
    assert df["keep"].tolist() == [i == 2 for i in range(len(frame))]


def test_bad_input_is_refused_and_changes_nothing(tagged):
    _, atlas_map, frame = tagged
    atlas_map.tags.add([frame["arxiv_id"][0]], "ok")
    before = (atlas_map.tags.get_tags(), atlas_map.tags.get_datums_in_tag("ok"))
    with pytest.raises(ValueError, match="not-an-id"):
        atlas_map.tags.add([frame["arxiv_id"][1], "not-an-id"], "ok")
    with pytest.raises(ValueError, match="empty|blank"):
        atlas_map.tags.add([frame["arxiv_id"][1]], "  ")
    with pytest.raises(ValueError, match="128"):
        atlas_map.tags.add([frame["arxiv_id"][1]], "x" * 500)
    with pytest.raises(ValueError, match="nope"):
        atlas_map.tags.get_datums_in_tag("nope")
    assert (atlas_map.tags.get_tags(), atlas_map.tags.get_datums_in_tag("ok")) == before


def _add_many(identifier: str, home: str, ids: list[str]) -> None:
    import os

    os.environ["ATLAS_HOME"] = home
    atlas_map = AtlasDataset(identifier).maps[0]
    for start in range(0, len(ids), 5):
        atlas_map.tags.add(ids[start : start + 5], "shared")


def test_two_processes_adding_to_one_tag_lose_nothing(tagged, store):
    ds, atlas_map, frame = tagged
    ids = frame["arxiv_id"].tolist()
    halves = [ids[0::2], ids[1::2]]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(ds.identifier, str(store), h)) for h in halves]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert sorted(atlas_map.tags.get_datums_in_tag("shared")) == sorted(ids)


def test_tags_survive_reindexing(store, arxiv):
    ds = AtlasDataset("retag", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(12))
    first = ds.create_index(indexed_field="title")
    first.tags.add(["0704.0003", "0704.0005"], "keep")
    ds.add_data(arxiv.iloc[12:14])
    second = ds.create_index(indexed_field="title")
    assert second.data.tb.num_rows == 14
    assert sorted(second.tags.get_datums_in_tag("keep")) == ["0704.0003", "0704.0005"]
    snapshot = second.read("tags").to_pandas()
    assert snapshot["keep"].sum() == 2 and len(snapshot) == 14


def test_cli_tag_and_tags(tagged, tmp_path, capsys):
    ds, _, frame = tagged
    id_file = tmp_path / "ids.txt"
    id_file.write_text("\n".join(frame["arxiv_id"][:3]) + "\n")
    assert main(["tag", ds.identifier, "todo", "--ids-from", str(id_file)]) == 0
    assert "tagged 3 more datums 'todo'" in capsys.readouterr().out
    assert main(["tags", ds.identifier]) == 0
    assert "3  todo" in capsys.readouterr().out
    id_file.write_text("bogus-id\n")
    assert main(["tag", ds.identifier, "todo", "--ids-from", str(id_file)]) == 2
    assert "bogus-id" in capsys.readouterr().err
