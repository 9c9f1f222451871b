"""Refreshes through Dagster keep the map: an unchanged rebuild changes nothing, a grown one
keeps the old points and topics and says what changed, ``fresh`` rebuilds from scratch."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from atlas_assets import AtlasDataset
from atlas_assets.cli import main
from atlas_assets.store.layout import dagster_home


def _state(atlas_map):
    """The map's coordinates, per-datum labels and topic tree, by id."""
    coords = atlas_map.embeddings.projected.set_index("arxiv_id")[["x", "y"]]
    labels = atlas_map.topics.df.set_index("arxiv_id")
    tree = atlas_map.read("hierarchy").to_pandas()
    return coords, labels, tree


def _metadata(asset: str) -> dict:
    with dg.DagsterInstance.from_config(str(dagster_home())) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_rebuilds_keep_the_map_and_fresh_starts_over(store, arxiv, capsys):
    frame = arxiv.head(140).reset_index(drop=True)
    ds = AtlasDataset("papers", unique_id_field="arxiv_id")
    ds.add_data(frame.head(120))
    first = _state(ds.create_index(indexed_field="abstract"))
    assert _metadata("projected")["refresh"] == {"start": "from scratch"}

    # Unchanged data: nothing at all changes.
    again = _state(ds.create_index())
    pd.testing.assert_frame_equal(again[0], first[0])
    pd.testing.assert_frame_equal(again[1], first[1])
    pd.testing.assert_frame_equal(again[2], first[2])
    changes = _metadata("topics")["topic_changes"]
    assert changes["depth 1"]["kept"] == (first[2]["depth"] == 1).sum()
    assert {changes["depth 1"][k] for k in ("split", "merged", "new", "gone")} == {0}
    assert _metadata("projected")["refresh"]["median_movement"] == 0.0

    # 20 more rows: old points barely move, and the listing says what happened.
    clusters = ds.maps[0].duplicates.df.set_index("arxiv_id")["cluster_id"]
    ds.add_data(frame.iloc[120:])
    grown = _state(ds.create_index())
    after = ds.maps[0].duplicates.df.set_index("arxiv_id")["cluster_id"]
    assert (after.loc[clusters.index] == clusters).mean() > 0.9  # duplicate clusters keep ids
    moved = np.linalg.norm(grown[0].loc[first[0].index] - first[0], axis=1)
    width = np.ptp(first[0]["x"])
    assert np.median(moved) / width < 0.02
    assert _metadata("projected")["refresh"]["median_movement"] < 0.02
    depth1 = _metadata("topics")["topic_changes"]["depth 1"]
    assert depth1["kept"] >= 1
    kept = (grown[1].loc[first[1].index, "topic_depth_1"] == first[1]["topic_depth_1"]).mean()
    assert kept >= 0.8  # by label, for the old datums
    capsys.readouterr()
    assert main(["ls"]) == 0
    listing = capsys.readouterr().out
    assert "last build: map kept, old points moved" in listing
    assert f"depth 1 topics: {depth1['kept']} kept" in listing

    # --fresh: today's from-scratch map, the same as a new dataset of the same rows gives.
    assert main(["index", "papers", "--fresh"]) == 0
    fresh = _state(AtlasDataset("papers").maps[0])
    assert _metadata("projected")["refresh"] == {"start": "from scratch"}
    other = AtlasDataset("copy", unique_id_field="arxiv_id")
    other.add_data(frame)
    scratch = _state(other.create_index(indexed_field="abstract"))
    pd.testing.assert_frame_equal(fresh[0], scratch[0])
    pd.testing.assert_frame_equal(fresh[1], scratch[1])
    pd.testing.assert_frame_equal(fresh[2], scratch[2])
    assert not np.allclose(fresh[0].loc[first[0].index], first[0], atol=0.5)  # it did start over
