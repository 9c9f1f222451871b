"""AtlasMapDuplicates on a real map with planted copies, and the reference's curation recipe."""

from __future__ import annotations

import numpy as np
import pytest

from atlas_assets import AtlasDataset, NomicDuplicatesOptions
from atlas_assets_tests.conftest import store_at


@pytest.fixture(scope="module")
def with_copies(tmp_path_factory, arxiv):
    """20 abstracts plus an exact copy of row 3 and a lightly edited copy of row 7 (one build
    for the module; the last test rebuilds it with other options)."""
    with store_at(tmp_path_factory.mktemp("dups")):
        yield build_with_copies(arxiv)


def build_with_copies(arxiv):
    frame = arxiv.head(20)[["arxiv_id", "title", "abstract"]].copy()
    copies = frame.iloc[[3, 7]].copy()
    copies["arxiv_id"] = ["copy-3", "copy-7"]
    copies.loc[copies.index[1], "abstract"] = copies["abstract"].iloc[1].upper()
    ds = AtlasDataset("dups", unique_id_field="arxiv_id")
    ds.add_data(frame)
    ds.add_data(copies)
    atlas_map = ds.create_index(indexed_field="abstract", topic_model=False)
    return ds, atlas_map, frame


def test_copies_share_a_cluster_and_the_first_is_kept(with_copies):
    ds, atlas_map, frame = with_copies
    df = atlas_map.duplicates.df
    assert list(df.columns) == ["arxiv_id", "duplicate_class", "cluster_id"]
    assert df["arxiv_id"].tolist() == frame["arxiv_id"].tolist() + ["copy-3", "copy-7"]
    by_id = df.set_index("arxiv_id")
    for original, copy in ((frame["arxiv_id"][3], "copy-3"), (frame["arxiv_id"][7], "copy-7")):
        assert by_id.loc[original, "cluster_id"] == by_id.loc[copy, "cluster_id"]
        assert by_id.loc[original, "duplicate_class"] == "retention candidate"
        assert by_id.loc[copy, "duplicate_class"] == "deletion candidate"
    assert set(df["duplicate_class"]) <= {"singleton", "retention candidate", "deletion candidate"}
    assert sorted(atlas_map.duplicates.deletion_candidates()) == ["copy-3", "copy-7"]
    assert repr(atlas_map.duplicates) == "2 deletion candidates in 2 clusters"
    pairs = atlas_map.duplicates.pairs()
    assert list(pairs.columns) == ["arxiv_id_a", "arxiv_id_b", "distance"]
    assert (pairs["distance"] <= 0.1 + 1e-6).all() and len(pairs) == 2


def test_curation_recipe_from_the_reference(with_copies, store):
    ds, atlas_map, frame = with_copies
    old_df = atlas_map.data.df
    ids_to_remove = atlas_map.duplicates.deletion_candidates()
    new_df = old_df[~old_df["arxiv_id"].isin(ids_to_remove)]
    clean = AtlasDataset("dups-without-duplicates", unique_id_field="arxiv_id")
    clean.add_data(new_df)
    clean_map = clean.create_index(indexed_field="abstract", topic_model=False)
    assert clean_map.duplicates.deletion_candidates() == []
    assert len(clean_map.data.df) == len(frame)


def test_tag_duplicates_keeps_a_derived_tag(with_copies):
    _, atlas_map, _ = with_copies
    # built with the defaults: tag_duplicates=True
    tagged = atlas_map.tags.get_datums_in_tag("duplicates: deletion candidates")
    assert sorted(tagged) == ["copy-3", "copy-7"]


def test_keep_rule_and_disabled_detection(with_copies):
    ds, _, frame = with_copies
    atlas_map = ds.create_index(
        topic_model=False,
        duplicate_detection=NomicDuplicatesOptions(keep="max:arxiv_id", duplicate_cutoff=0.05),
    )
    assert sorted(atlas_map.duplicates.deletion_candidates()) == sorted(frame["arxiv_id"][[3, 7]])
    off = ds.create_index(topic_model=False, duplicate_detection=False)
    with pytest.raises(ValueError, match="duplicate detection is off"):
        _ = off.duplicates
    with pytest.raises(ValueError, match="no column 'nope'"):
        ds.create_index(duplicate_detection={"keep": "max:nope"})


def test_class_invariant_check_names_the_problem():
    from atlas_assets.defs.checks import duplicate_class_problem

    ok = (np.array(["retention candidate", "deletion candidate", "singleton"]), np.array([0, 0, 1]))
    assert duplicate_class_problem(*ok) is None
    two_keepers = (np.array(["retention candidate"] * 2), np.array([0, 0]))
    assert "more than one" in duplicate_class_problem(*two_keepers)
    crowded = (np.array(["singleton", "singleton"]), np.array([0, 0]))
    assert "shares its cluster" in duplicate_class_problem(*crowded)


def test_a_failed_rebuild_leaves_the_derived_tag_as_published(store, arxiv, monkeypatch):
    """The derived tag follows the published map: a rebuild that fails after its duplicates
    were found (here in the tags step) changes neither the map nor the tag."""
    from atlas_assets.lib.tagstore import TagStore

    ds, atlas_map, frame = build_with_copies(arxiv)
    tag = "duplicates: deletion candidates"
    assert sorted(atlas_map.tags.get_datums_in_tag(tag)) == ["copy-3", "copy-7"]
    third = frame.iloc[[5]].assign(arxiv_id="copy-5")
    ds.add_data(third)

    def broken(self, ids):
        raise RuntimeError("tag snapshot crashed")

    with monkeypatch.context() as patch:
        patch.setattr(TagStore, "memberships", broken)
        with pytest.raises(RuntimeError, match="tag snapshot crashed"):
            ds.create_index(indexed_field="abstract", topic_model=False)
    assert sorted(ds.maps[0].tags.get_datums_in_tag(tag)) == ["copy-3", "copy-7"]
    assert ds.maps[0].duplicates.deletion_candidates() == ["copy-3", "copy-7"]
    rebuilt = ds.create_index(indexed_field="abstract", topic_model=False)
    assert sorted(rebuilt.tags.get_datums_in_tag(tag)) == ["copy-3", "copy-5", "copy-7"]
