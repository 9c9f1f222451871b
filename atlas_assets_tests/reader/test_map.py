"""The reader reads what Dagster wrote: the contract of AtlasMap, its data and embeddings."""

from __future__ import annotations

import mmap

import numpy as np
import pandas as pd
import pytest

from atlas_assets import AtlasDataset, ResourceNotReadyError, StaleResourceError
from atlas_assets_tests.conftest import store_at


def test_maps_and_identity(built):
    ds, atlas_map, frame = built
    assert ds.identifier == "arxiv-sample" and ds.slug == "arxiv-sample"
    assert ds.id_field == "arxiv_id"
    assert ds.total_datums == len(frame)
    assert ds.dataset_fields[0] == "arxiv_id" and "abstract" in ds.dataset_fields
    assert [m.name for m in ds.maps] == [atlas_map.name]
    assert ds.get_map(atlas_map.name).id == atlas_map.id
    with pytest.raises(ValueError, match="no map named"):
        ds.get_map("nope")


def test_data_rows_in_upload_order(built):
    _, atlas_map, frame = built
    tb = atlas_map.data.tb
    assert tb.column_names == list(frame.columns)
    assert tb.column("arxiv_id").to_pylist() == frame["arxiv_id"].tolist()
    df = atlas_map.data.df
    assert isinstance(df, pd.DataFrame) and len(df) == len(frame)
    assert df["title"].tolist() == frame["title"].tolist()


def test_latent_is_memory_mapped_float32_unit_vectors(built):
    _, atlas_map, frame = built
    latent = atlas_map.embeddings.latent
    assert latent.shape == (len(frame), 384) and latent.dtype == np.float32
    assert not latent.flags.owndata  # a view on the mapped file, not a copy
    owner = latent
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(getattr(owner, "obj", owner), mmap.mmap)  # the file's mapping, no copy
    np.testing.assert_allclose(np.linalg.norm(latent, axis=1), 1.0, atol=1e-5)


def test_latent_may_be_changed_in_place_without_touching_the_file(built):
    import faiss

    from atlas_assets.reader.dataset import AtlasDataset as Reopened

    ds, atlas_map, _ = built
    path = atlas_map.path("latent")
    stored_bytes = path.read_bytes()
    stored = np.array(atlas_map.embeddings.latent)
    latent = atlas_map.embeddings.latent
    assert latent.flags.writeable and latent.flags.c_contiguous
    latent *= 3.0
    latent /= np.linalg.norm(latent, axis=1, keepdims=True) * 2.0  # rows now of length 0.5
    np.testing.assert_allclose(np.linalg.norm(latent, axis=1), 0.5, atol=1e-5)
    faiss.normalize_L2(latent)  # used to kill the process on a read-only map
    np.testing.assert_allclose(latent, stored, atol=1e-5)
    latent[:] = 7.0
    assert path.read_bytes() == stored_bytes  # the stored file never changed
    assert np.array_equal(atlas_map.embeddings.latent, stored)  # a second access: stored values
    with store_at(ds._paths.root.parents[1]):
        again = Reopened(ds.identifier).get_map().embeddings.latent
    assert np.array_equal(again, stored)  # a new open: stored values
    ids, _ = atlas_map.embeddings.vector_search(ids=[atlas_map.data.tb.column(0)[0].as_py()])
    assert len(ids[0]) == 5  # searches read the stored vectors, not the changed copy


def test_projected_columns_and_alignment(built):
    _, atlas_map, frame = built
    projected = atlas_map.embeddings.projected
    assert list(projected.columns) == ["arxiv_id", "x", "y"]
    assert projected["arxiv_id"].tolist() == frame["arxiv_id"].tolist()
    assert projected["x"].dtype == np.float32 and projected["y"].dtype == np.float32
    assert np.isfinite(projected[["x", "y"]].to_numpy()).all()
    assert projected[["x", "y"]].to_numpy().std(axis=0).min() > 0  # a spread, not a point
    assert atlas_map.embeddings.tb.num_rows == len(frame)


def test_vector_search_by_id_and_by_vector(built):
    _, atlas_map, frame = built
    first = frame["arxiv_id"][0]
    ids, dists = atlas_map.embeddings.vector_search(ids=[first, frame["arxiv_id"][1]], k=5)
    assert len(ids) == 2 and all(len(row) == 5 for row in ids)
    assert first not in ids[0]  # a datum is not its own neighbour
    assert dists[0] == sorted(dists[0])
    latent = atlas_map.embeddings.latent
    ids_q, dists_q = atlas_map.embeddings.vector_search(queries=latent[:1] * 3.0, k=3)
    assert ids_q[0][0] == first and dists_q[0][0] == pytest.approx(0.0, abs=1e-5)


def test_vector_search_errors(built):
    _, atlas_map, _ = built
    emb = atlas_map.embeddings
    with pytest.raises(ValueError, match="exactly one"):
        emb.vector_search()
    with pytest.raises(ValueError, match="384 columns"):
        emb.vector_search(queries=np.zeros((1, 3)))
    with pytest.raises(KeyError, match="unknown ids"):
        emb.vector_search(ids=["nope"])
    with pytest.raises(ValueError, match="k must"):
        emb.vector_search(ids=[emb._ids[0]], k=0)


def test_get_data_in_requested_order(built):
    ds, _, frame = built
    ids = [frame["arxiv_id"][3], frame["arxiv_id"][0]]
    rows = ds.get_data(ids)
    assert [r["arxiv_id"] for r in rows] == ids
    assert rows[0]["title"] == frame["title"][3]
    with pytest.raises(KeyError, match="missing-1"):
        ds.get_data([ids[0], "missing-1"])


def test_new_batch_is_not_silently_mixed_in(built, store, arxiv):
    """Data added after a build leaves the map serving its own version, consistently."""
    import shutil

    ds, _, frame = built
    shutil.copytree(ds._paths.root, store / "datasets" / ds.slug)
    copy = AtlasDataset(ds.identifier)
    copy.add_data(arxiv.iloc[len(frame) : len(frame) + 2])
    assert copy.total_datums == len(frame) + 2
    atlas_map = copy.maps[0]
    assert atlas_map.data.tb.num_rows == len(frame)
    assert len(atlas_map.embeddings.projected) == len(frame)


def test_stale_resource_is_refused(built, tmp_path):
    import shutil

    from atlas_assets.store.files import read_arrow, write_resource

    _, atlas_map, _ = built
    path = atlas_map._paths.resource("projected")
    backup = tmp_path / "projected.arrow"
    shutil.copy(path, backup)
    try:
        write_resource(path, read_arrow(backup), resource="projected", dataset_version="old")
        from atlas_assets.reader.map import AtlasMap

        fresh = AtlasMap(atlas_map.dataset, atlas_map.config)
        with pytest.raises(StaleResourceError, match="projected"):
            _ = fresh.embeddings.projected
    finally:
        shutil.copy(backup, path)


def test_missing_resource_says_what_to_run(store, arxiv):
    ds = AtlasDataset("unbuilt", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(3))
    from atlas_assets.reader.map import AtlasMap

    atlas_map = AtlasMap(ds, {"name": "unbuilt", "id": "x"})
    with pytest.raises(ResourceNotReadyError, match="atlas index unbuilt"):
        _ = atlas_map.embeddings.latent
    assert ds.maps == []
