"""Each resource's schema in one place: typed writers and readers round-trip, and the index
configuration decides once whether an optional stage is on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from atlas_assets.lib.graph import KnnGraph
from atlas_assets.options import IndexConfig
from atlas_assets.store import StaleResourceError, read_resource
from atlas_assets.store.resources import (
    DELETION,
    EMBEDDING,
    NEIGHBORS,
    X,
    deletion_candidates,
    duplicate_pairs_table,
    duplicates_table,
    read_ids,
    read_knn,
    read_latent,
    read_projected,
    write_duplicates,
    write_knn,
    write_latent,
    write_projected,
)

IDS = pa.table({"doc": pa.array(["a", "b", "c"])})


def test_latent_round_trips_read_only_or_copy_on_write(tmp_path) -> None:
    path = tmp_path / "latent.arrow"
    vectors = np.eye(3, 4, dtype=np.float32)
    table = write_latent(path, IDS, vectors, dataset_version="v1", params={"model": "m"})
    assert table.column_names == ["doc", EMBEDDING]
    stored = read_latent(path, expected_version="v1")
    np.testing.assert_array_equal(stored, vectors)
    assert not stored.flags.writeable  # what the pipeline hands its algorithms
    private = read_latent(path, writable=True)
    private *= 2  # copy-on-write: the file keeps its values
    np.testing.assert_array_equal(read_latent(path), vectors)
    assert read_ids(path).equals(IDS)
    with pytest.raises(StaleResourceError):
        read_latent(path, expected_version="v2")


def test_knn_projected_and_duplicates_round_trip(tmp_path) -> None:
    graph = KnnGraph(np.array([[1, 2], [0, 2], [0, 1]], np.int64), np.full((3, 2), 0.5, np.float32))
    write_knn(tmp_path / "knn.arrow", IDS, graph, dataset_version="v1")
    assert read_resource(tmp_path / "knn.arrow").column_names == ["doc", NEIGHBORS, "distances"]
    back = read_knn(tmp_path / "knn.arrow", expected_version="v1")
    np.testing.assert_array_equal(back.indices, graph.indices)
    np.testing.assert_array_equal(back.distances, graph.distances)

    coords = np.array([[0, 1], [2, 3], [4, 5]], np.float32)
    table = write_projected(tmp_path / "projected.arrow", IDS, coords, dataset_version="v1")
    assert table.column(X).to_pylist() == [0, 2, 4]
    np.testing.assert_array_equal(read_projected(tmp_path / "projected.arrow"), coords)

    classes = np.array(["retention candidate", DELETION, "singleton"], object)
    table = duplicates_table(IDS, classes, np.array([0, 0, 1]))
    pairs = duplicate_pairs_table(IDS, [0], [1], [0.05])
    assert pairs.column_names == ["doc_a", "doc_b", "distance"]
    assert pairs.column("doc_b").to_pylist() == ["b"]
    write_duplicates(
        tmp_path / "dup.arrow", tmp_path / "pairs.arrow", table, pairs, dataset_version="v1"
    )
    assert deletion_candidates(read_resource(tmp_path / "dup.arrow")) == ["b"]


@pytest.mark.parametrize(
    ("raw", "topics", "duplicates"),
    [
        ({"topic_model": {"build_topic_model": True}, "duplicate_detection": {}}, True, True),
        ({"topic_model": {"build_topic_model": False}, "duplicate_detection": None}, False, False),
        ({"topic_model": None, "duplicate_detection": {"duplicate_cutoff": 0.2}}, False, True),
        ({}, False, False),  # a configuration without the keys: both stages off
    ],
)
def test_index_config_decides_which_stages_are_on(raw, topics, duplicates) -> None:
    config = IndexConfig(raw)
    assert config.topics_enabled is topics
    assert config.duplicates_enabled is duplicates
    assert config.projection.umap_params()["n_neighbors"] == 15  # defaults when unrecorded


def test_index_config_parses_each_stage_once() -> None:
    config = IndexConfig({"duplicate_detection": {"duplicate_cutoff": 0.2}})
    assert config.duplicate_detection is config.duplicate_detection
    assert config.duplicate_detection.duplicate_cutoff == 0.2
    with pytest.raises(ValueError, match="keep"):
        assert IndexConfig({"duplicate_detection": {"keep": "nonsense"}}).duplicate_detection
