"""Atomic, versioned resource files and the layout's refusal of unsafe names."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from atlas_assets.store import (
    ResourceNotReadyError,
    StaleResourceError,
    dataset_paths,
    list_datasets,
    parse_identifier,
    read_resource,
    resource_info,
    write_resource,
)
from atlas_assets.store.files import atomic_path, fixed_list, matrix


def test_resource_round_trip_records_lineage(tmp_path):
    path = tmp_path / "r.arrow"
    table = pa.table({"id": ["a", "b"], "x": pa.array([1.0, 2.0], pa.float32())})
    write_resource(path, table, resource="projected", dataset_version="v1", params={"seed": 3})
    info = resource_info(path)
    assert info["dataset_version"] == "v1" and info["params"] == {"seed": 3}
    assert read_resource(path, expected_version="v1").column("id").to_pylist() == ["a", "b"]
    with pytest.raises(StaleResourceError, match="v1"):
        read_resource(path, expected_version="v2")
    with pytest.raises(ResourceNotReadyError):
        read_resource(tmp_path / "absent.arrow")
    assert resource_info(tmp_path / "absent.arrow") is None


def test_failed_write_keeps_previous_version_and_leaves_no_temp(tmp_path):
    path = tmp_path / "r.arrow"
    write_resource(path, pa.table({"a": [1]}), resource="dataset", dataset_version="v1")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("crash mid-write")
    assert resource_info(path)["dataset_version"] == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["r.arrow"]


def test_matrix_round_trip_is_zero_copy(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = tmp_path / "m.arrow"
    write_resource(
        path, pa.table({"v": fixed_list(vectors)}), resource="latent", dataset_version="v"
    )
    view = matrix(read_resource(path).column("v"))
    np.testing.assert_array_equal(view, vectors)
    assert not view.flags.owndata


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ("My Data", (None, "my-data")),
        ("Org/Some_Set", ("org", "some-set")),
        ("org.some-set", (None, "orgsome-set")),  # a dot is dropped, as the hosted client does
        ("A1", (None, "a1")),
        ("-x", (None, "x")),
        ("a:b", (None, "ab")),
        ("x y/z\x00", ("x-y", "z")),
    ],
)
def test_identifiers_normalise(identifier, expected):
    assert parse_identifier(identifier) == expected


def test_partition_keys_keep_their_namespace():
    from atlas_assets.store import parse_partition_key

    assert parse_partition_key("org.some-set") == ("org", "some-set")
    assert parse_partition_key("some-set") == (None, "some-set")


@pytest.mark.parametrize("bad", ["..", ".", "a/..", "a/b/c", "/abs", "x/", "a\\b", "(:)", ""])
def test_unsafe_identifiers_are_refused(bad):
    with pytest.raises(ValueError, match="identifier"):
        parse_identifier(bad)


def test_paths_stay_under_the_root(tmp_path):
    paths = dataset_paths("org/name", tmp_path)
    assert paths.root.resolve().is_relative_to(tmp_path.resolve())
    with pytest.raises(ValueError, match="unknown resource"):
        paths.resource("../../etc")


def test_list_datasets(tmp_path):
    from atlas_assets.store.datasets import create_meta

    for ident in ("b", "org/a"):
        create_meta(dataset_paths(ident, tmp_path), description="", id_field="id", is_public=True)
    assert [p.identifier for p in list_datasets(tmp_path)] == ["b", "org/a"]
